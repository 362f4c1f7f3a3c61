-- 0001: the journal's first schema (PostgreSQL).
-- Runs with search_path set to the store's schema; names are unqualified on purpose.

-- Every resource version received, deduplicated on (server, type, id, versionId).
-- Rows are written once and never updated (a version's bytes are never rewritten).
CREATE TABLE resource_version (
    seq           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server        TEXT        NOT NULL,
    resource_type TEXT        NOT NULL,
    resource_id   TEXT        NOT NULL,
    version_id    TEXT        NOT NULL,
    last_updated  TEXT,
    raw           BYTEA       NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (server, resource_type, resource_id, version_id)
);

-- The versions not yet processed (by complete or reject), by arrival. A narrow table of its
-- own, so marking a version processed deletes a small row instead of rewriting a wide one.
CREATE TABLE pending_version (
    seq BIGINT PRIMARY KEY REFERENCES resource_version (seq)
);

-- The latest processed version of each resource.
CREATE TABLE snapshot (
    server        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    version_id    TEXT NOT NULL,
    PRIMARY KEY (server, resource_type, resource_id)
);

-- What stays() reads: one row per Encounter snapshot that has a subject.
CREATE TABLE encounter_index (
    server          TEXT NOT NULL,
    encounter       TEXT NOT NULL,
    patient         TEXT NOT NULL,
    encounter_class TEXT NOT NULL,
    status          TEXT NOT NULL,
    start_at        TIMESTAMPTZ,
    end_at          TIMESTAMPTZ,
    PRIMARY KEY (server, encounter)
);

CREATE INDEX encounter_index_patient ON encounter_index (server, patient);

-- Transitions found, once per Transition.key; body is the transition as JSON.
CREATE TABLE transition (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         TEXT        NOT NULL UNIQUE,
    kind        TEXT        NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    note        TEXT        NOT NULL DEFAULT '',
    body        JSONB       NOT NULL
);


-- Where the next poll of a resource type starts.
CREATE TABLE watermark (
    server        TEXT        NOT NULL,
    resource_type TEXT        NOT NULL,
    instant       TEXT        NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (server, resource_type)
);

-- Writes owed to the server, once per key.
CREATE TABLE outbox (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        TEXT        NOT NULL UNIQUE,
    kind       TEXT        NOT NULL,
    payload    JSONB       NOT NULL,
    state      TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts   INTEGER     NOT NULL DEFAULT 0,
    last_error TEXT        NOT NULL DEFAULT '',
    result     JSONB       NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- claim_outbox, outbox_depth and outbox_items(state) read by state.
CREATE INDEX outbox_state ON outbox (state, id);

-- Inputs and writes that failed for a reason a retry will not fix.
CREATE TABLE dead_letter (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source     TEXT        NOT NULL,
    reference  TEXT        NOT NULL,
    reason     TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    replayed   BOOLEAN     NOT NULL DEFAULT false
);


-- Writes the engine made (or attempted) on a server.
CREATE TABLE audit_log (
    id        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    action    TEXT        NOT NULL,
    reference TEXT        NOT NULL,
    detail    JSONB       NOT NULL
);

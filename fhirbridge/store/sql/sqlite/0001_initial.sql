-- 0001: the journal's first schema (SQLite).
-- Timestamps are ISO 8601 text in UTC with microseconds ("2024-05-01T08:00:00.000000+00:00"),
-- so they sort and compare as text. JSON columns hold compact JSON text.

-- Every resource version received, deduplicated on (server, type, id, versionId).
-- Rows are written once and never updated (a version's bytes are never rewritten).
CREATE TABLE resource_version (
    seq           INTEGER PRIMARY KEY,
    server        TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    version_id    TEXT    NOT NULL,
    last_updated  TEXT,
    raw           BLOB    NOT NULL,
    received_at   TEXT    NOT NULL,
    UNIQUE (server, resource_type, resource_id, version_id)
);

-- The versions not yet processed (by complete or reject), by arrival. A narrow table of its
-- own, so marking a version processed rewrites one small page, not the version's row.
CREATE TABLE pending_version (
    seq INTEGER PRIMARY KEY REFERENCES resource_version (seq)
);

-- The latest processed version of each resource.
CREATE TABLE snapshot (
    server        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    version_id    TEXT NOT NULL,
    PRIMARY KEY (server, resource_type, resource_id)
) WITHOUT ROWID;

-- What stays() reads: one row per Encounter snapshot that has a subject.
CREATE TABLE encounter_index (
    server          TEXT NOT NULL,
    encounter       TEXT NOT NULL,
    patient         TEXT NOT NULL,
    encounter_class TEXT NOT NULL,
    status          TEXT NOT NULL,
    start_at        TEXT,
    end_at          TEXT,
    PRIMARY KEY (server, encounter)
) WITHOUT ROWID;

CREATE INDEX encounter_index_patient ON encounter_index (server, patient);

-- Transitions found, once per Transition.key; body is the transition as JSON.
CREATE TABLE transition (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL
);


-- Where the next poll of a resource type starts.
CREATE TABLE watermark (
    server        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    instant       TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (server, resource_type)
) WITHOUT ROWID;

-- Writes owed to the server, once per key.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT    NOT NULL DEFAULT '',
    result     TEXT    NOT NULL DEFAULT '{}',
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);

-- claim_outbox, outbox_depth and outbox_items(state) read by state.
CREATE INDEX outbox_state ON outbox (state, id);

-- Inputs and writes that failed for a reason a retry will not fix.
CREATE TABLE dead_letter (
    id         INTEGER PRIMARY KEY,
    source     TEXT    NOT NULL,
    reference  TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    replayed   INTEGER NOT NULL DEFAULT 0
);


-- Writes the engine made (or attempted) on a server.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    action    TEXT NOT NULL,
    reference TEXT NOT NULL,
    detail    TEXT NOT NULL
);

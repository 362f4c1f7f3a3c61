-- 0002: one writer per journal, work leased by patient lane, event counters (PostgreSQL).
-- One schema for the three: the writer lock, the lane and poll leases of several workers,
-- and the outbox leases all live in `lease`/`outbox`.

-- Who holds what: `writer:<server>` (the journal's one writer, held by a session advisory
-- lock that ends with its connection: expires_at is NULL), `lane:<n>` and
-- `poll:<server>:<type>` (leases that end at expires_at unless renewed).
CREATE TABLE lease (
    name        TEXT        NOT NULL PRIMARY KEY,
    holder      TEXT        NOT NULL,
    host        TEXT        NOT NULL,
    pid         INTEGER     NOT NULL,
    command     TEXT        NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    takeovers   INTEGER     NOT NULL DEFAULT 0
);

-- The workers alive (seen_until in the future), for sharing the lanes out evenly.
CREATE TABLE worker (
    id         TEXT        NOT NULL PRIMARY KEY,
    host       TEXT        NOT NULL,
    pid        INTEGER     NOT NULL,
    command    TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    seen_until TIMESTAMPTZ NOT NULL
);

-- A version's patient, hashed (CRC-32 of "Patient/id"): its lane is lane_key % lanes, so one
-- patient's versions are all in one lane. Versions journalled before this migration are in
-- lane 0.
ALTER TABLE resource_version ADD COLUMN lane_key BIGINT NOT NULL DEFAULT 0;

-- Outbox leases: the worker performing an item, and until when it may.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until TIMESTAMPTZ;

-- Event numbers of topic-based subscriptions, shared by every receiver: every number up to
-- `contiguous` arrived; `highest` is the highest the server claimed.
CREATE TABLE subscription_counter (
    server       TEXT        NOT NULL,
    subscription TEXT        NOT NULL,
    contiguous   BIGINT      NOT NULL DEFAULT 0,
    highest      BIGINT      NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (server, subscription)
);

-- Event numbers received above `contiguous` (a hole below them is a suspected gap).
CREATE TABLE subscription_event (
    server       TEXT   NOT NULL,
    subscription TEXT   NOT NULL,
    number       BIGINT NOT NULL,
    PRIMARY KEY (server, subscription, number)
);

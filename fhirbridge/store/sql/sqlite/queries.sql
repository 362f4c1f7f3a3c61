-- Named queries of the SQLite store. Each starts at a "-- name:" line; parameters are bound
-- by name (:server), never formatted in.

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: schema_versions
SELECT version FROM schema_version ORDER BY version;

-- name: record_migration
INSERT INTO schema_version (version, name, applied_at) VALUES (:version, :name, :now);

-- name: insert_version
INSERT OR IGNORE INTO resource_version
    (server, resource_type, resource_id, version_id, last_updated, raw, received_at, lane_key)
VALUES (:server, :resource_type, :resource_id, :version_id, :last_updated, :raw, :now,
        :lane_key);

-- name: last_seq
SELECT coalesce(max(seq), 0) FROM resource_version;

-- name: pend_appended
-- The versions an append just inserted (rowids past the highest before it) become pending.
INSERT INTO pending_version (seq) SELECT seq FROM resource_version WHERE seq > :after;

-- name: appended_keys
SELECT server, resource_type, resource_id, version_id FROM resource_version WHERE seq > :after;

-- name: repend_version
-- Puts a journalled version back on the pending list (a replay after a fix).
INSERT INTO pending_version (seq)
SELECT seq FROM resource_version
WHERE server = :server AND resource_type = :resource_type
  AND resource_id = :resource_id AND version_id = :version_id
ON CONFLICT DO NOTHING;

-- name: mark_processed
-- Takes the version off the pending list; changes nothing when it is not there.
DELETE FROM pending_version
WHERE seq = (
    SELECT seq FROM resource_version
    WHERE server = :server AND resource_type = :resource_type
      AND resource_id = :resource_id AND version_id = :version_id
);

-- name: pending
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM pending_version AS p
JOIN resource_version AS v ON v.seq = p.seq
ORDER BY p.seq
LIMIT :limit;

-- name: snapshots
-- The snapshots of several resources of one type at once (:ids is a JSON array of ids).
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM snapshot AS s
JOIN resource_version AS v
  ON v.server = s.server AND v.resource_type = s.resource_type
 AND v.resource_id = s.resource_id AND v.version_id = s.version_id
WHERE s.server = :server AND s.resource_type = :resource_type
  AND s.resource_id IN (SELECT value FROM json_each(:ids));

-- name: upsert_snapshot
INSERT INTO snapshot (server, resource_type, resource_id, version_id)
VALUES (:server, :resource_type, :resource_id, :version_id)
ON CONFLICT (server, resource_type, resource_id) DO UPDATE SET version_id = excluded.version_id;

-- name: upsert_encounter
INSERT INTO encounter_index (server, encounter, patient, encounter_class, status, start_at, end_at)
VALUES (:server, :encounter, :patient, :encounter_class, :status, :start_at, :end_at)
ON CONFLICT (server, encounter) DO UPDATE SET
    patient = excluded.patient,
    encounter_class = excluded.encounter_class,
    status = excluded.status,
    start_at = excluded.start_at,
    end_at = excluded.end_at;

-- name: delete_encounter
DELETE FROM encounter_index WHERE server = :server AND encounter = :encounter;

-- name: patient_stays
-- The stays of several patients at once (:patients is a JSON array), by patient then as stays.
SELECT server, encounter, patient, encounter_class, status, start_at, end_at
FROM encounter_index INDEXED BY encounter_index_patient
WHERE server = :server AND patient IN (SELECT value FROM json_each(:patients))
ORDER BY patient, start_at IS NULL, start_at, encounter;

-- name: insert_transition
INSERT OR IGNORE INTO transition (key, kind, detected_at, note, body)
VALUES (:key, :kind, :detected_at, :note, :body);

-- name: transitions
SELECT key, detected_at, note, body
FROM transition
WHERE (:kind IS NULL OR kind = :kind)
  AND (:since IS NULL OR detected_at >= :since)
ORDER BY id;

-- name: watermark
SELECT instant FROM watermark WHERE server = :server AND resource_type = :resource_type;

-- name: set_watermark
INSERT INTO watermark (server, resource_type, instant, updated_at)
VALUES (:server, :resource_type, :instant, :now)
ON CONFLICT (server, resource_type) DO UPDATE SET
    instant = excluded.instant,
    updated_at = excluded.updated_at;

-- name: insert_outbox
INSERT OR IGNORE INTO outbox (key, kind, payload, created_at, updated_at, lane_key)
VALUES (:key, :kind, :payload, :now, :now, :lane_key);

-- name: claim_outbox
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE state = 'pending'
ORDER BY id
LIMIT :limit;

-- name: outbox_item
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE id = :id;

-- name: finish_outbox
-- A leased item counted its attempt when it was claimed.
UPDATE outbox
SET state = 'done', attempts = attempts + CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END,
    result = :result, updated_at = :now, claimed_by = NULL, lease_until = NULL
WHERE id = :id;

-- name: fail_outbox
-- A leased item counted its attempt when it was claimed; the lease ends either way.
UPDATE outbox
SET state = :state, attempts = attempts + CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END,
    last_error = :error, updated_at = :now, claimed_by = NULL, lease_until = NULL
WHERE id = :id;

-- name: outbox_depth
SELECT count(*) FROM outbox WHERE state = 'pending';

-- name: outbox_items
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE (:state IS NULL OR state = :state)
ORDER BY id;

-- name: release_outbox_dead_letters
UPDATE dead_letter
SET replayed = 1
WHERE source = 'outbox' AND replayed = 0
  AND reference IN (SELECT key FROM outbox WHERE state = 'dead');

-- name: requeue_dead_outbox
UPDATE outbox
SET state = 'pending', attempts = 0, updated_at = :now, claimed_by = NULL, lease_until = NULL
WHERE state = 'dead';

-- name: insert_dead_letter
INSERT INTO dead_letter (source, reference, reason, payload, created_at)
VALUES (:source, :reference, :reason, :payload, :now);

-- name: dead_letters
SELECT id, source, reference, reason, payload, created_at, replayed
FROM dead_letter
WHERE (:include_replayed OR replayed = 0)
ORDER BY id;

-- name: mark_replayed
UPDATE dead_letter SET replayed = 1 WHERE id = :id;

-- name: insert_audit
INSERT INTO audit_log (at, action, reference, detail) VALUES (:now, :action, :reference, :detail);

-- name: audit_log
SELECT id, at, action, reference, detail FROM audit_log ORDER BY id DESC LIMIT :limit;

-- name: has_schema_version
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version';

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: lease
SELECT holder, host, pid, command, acquired_at, expires_at, takeovers FROM lease WHERE name = :name;

-- name: hold_lease
-- A lease held by a lock of its own (the writer): whoever asks has the lock, so it overwrites.
INSERT INTO lease (name, holder, host, pid, command, acquired_at, expires_at)
VALUES (:name, :holder, :host, :pid, :command, :now, NULL)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    host = excluded.host,
    pid = excluded.pid,
    command = excluded.command,
    acquired_at = excluded.acquired_at,
    expires_at = NULL,
    takeovers = lease.takeovers + (lease.holder NOT IN ('', excluded.holder));

-- name: take_lease
-- Takes a free lease (released: holder ''), renews one's own, or takes over one that expired
-- (counted in takeovers); changes no row when another holder's lease still runs.
INSERT INTO lease (name, holder, host, pid, command, acquired_at, expires_at)
VALUES (:name, :holder, :host, :pid, :command, :now, :until)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    host = excluded.host,
    pid = excluded.pid,
    command = excluded.command,
    acquired_at = CASE WHEN lease.holder = excluded.holder THEN lease.acquired_at
                       ELSE excluded.acquired_at END,
    expires_at = excluded.expires_at,
    takeovers = lease.takeovers + (lease.holder NOT IN ('', excluded.holder))
WHERE lease.holder IN ('', excluded.holder)
   OR (lease.expires_at IS NOT NULL AND lease.expires_at < excluded.acquired_at);

-- name: release_lease
-- The row stays, free (holder ''), so that its takeovers keep counting.
UPDATE lease SET holder = '', expires_at = NULL WHERE name = :name AND holder = :holder;

-- name: leases_held
SELECT name FROM lease
WHERE holder = :holder AND substr(name, 1, length(:prefix)) = :prefix
  AND expires_at >= :now
ORDER BY name;

-- name: renew_leases
-- Extends the worker's leases that still run (a lease that ran out may have a new holder).
UPDATE lease SET expires_at = :until
WHERE holder = :holder AND substr(name, 1, length(:prefix)) = :prefix AND expires_at >= :now
RETURNING name;

-- name: leases_of_others
SELECT name FROM lease
WHERE holder NOT IN ('', :holder) AND substr(name, 1, length(:prefix)) = :prefix
  AND expires_at >= :now;

-- name: release_leases
UPDATE lease SET holder = '', expires_at = NULL
WHERE holder = :holder AND substr(name, 1, length(:prefix)) = :prefix;

-- name: lease_takeovers
SELECT coalesce(sum(takeovers), 0) FROM lease WHERE substr(name, 1, length(:prefix)) = :prefix;

-- name: see_worker
INSERT INTO worker (id, host, pid, command, started_at, seen_until)
VALUES (:holder, :host, :pid, :command, :now, :until)
ON CONFLICT (id) DO UPDATE SET seen_until = excluded.seen_until;

-- name: live_workers
SELECT count(*) FROM worker WHERE seen_until >= :now;

-- name: retire_worker
DELETE FROM worker WHERE id = :holder OR seen_until < :now;

-- name: pending_in_lanes
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM pending_version AS p
JOIN resource_version AS v ON v.seq = p.seq
WHERE (v.lane_key % :lane_count) IN (SELECT value FROM json_each(:lanes))
ORDER BY p.seq
LIMIT :limit;

-- name: lease_outbox
-- Leases pending items nobody holds (or whose lease ran out) to one worker; counts the attempt.
-- With lanes, only the items of the patients in those lanes (lane_key % lane_count).
UPDATE outbox
SET claimed_by = :holder, lease_until = :until, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM outbox
    WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < :now)
      AND (:lanes IS NULL OR (lane_key % :lane_count) IN (SELECT value FROM json_each(:lanes)))
    ORDER BY id
    LIMIT :limit
)
RETURNING id, key, kind, payload, state, attempts, last_error, result;

-- name: renew_outbox
UPDATE outbox SET lease_until = :until
WHERE claimed_by = :holder AND state = 'pending' AND lease_until >= :now;

-- name: release_outbox
UPDATE outbox SET claimed_by = NULL, lease_until = NULL
WHERE claimed_by = :holder AND state = 'pending';

-- name: leased_outbox
SELECT count(*) FROM outbox WHERE state = 'pending' AND lease_until >= :now;

-- name: open_counter
INSERT INTO subscription_counter (server, subscription, updated_at)
VALUES (:server, :subscription, :now)
ON CONFLICT (server, subscription) DO NOTHING;

-- name: counter
SELECT contiguous, highest FROM subscription_counter
WHERE server = :server AND subscription = :subscription;

-- name: insert_event
INSERT OR IGNORE INTO subscription_event (server, subscription, number)
VALUES (:server, :subscription, :number);

-- name: events_above
SELECT number FROM subscription_event
WHERE server = :server AND subscription = :subscription AND number > :contiguous
ORDER BY number;

-- name: drop_events
DELETE FROM subscription_event
WHERE server = :server AND subscription = :subscription AND number <= :contiguous;

-- name: set_counter
UPDATE subscription_counter
SET contiguous = :contiguous, highest = :highest, updated_at = :now
WHERE server = :server AND subscription = :subscription;

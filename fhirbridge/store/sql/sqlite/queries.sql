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
    (server, resource_type, resource_id, version_id, last_updated, raw, received_at)
VALUES (:server, :resource_type, :resource_id, :version_id, :last_updated, :raw, :now);

-- name: insert_pending
INSERT INTO pending_version (seq) VALUES (:seq);

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

-- name: snapshot
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM snapshot AS s
JOIN resource_version AS v
  ON v.server = s.server AND v.resource_type = s.resource_type
 AND v.resource_id = s.resource_id AND v.version_id = s.version_id
WHERE s.server = :server AND s.resource_type = :resource_type AND s.resource_id = :resource_id;

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

-- name: stays
-- Without statistics the planner would rather scan the server's whole primary key range.
SELECT server, encounter, patient, encounter_class, status, start_at, end_at
FROM encounter_index INDEXED BY encounter_index_patient
WHERE server = :server AND patient = :patient
ORDER BY start_at IS NULL, start_at, encounter;

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
INSERT OR IGNORE INTO outbox (key, kind, payload, created_at, updated_at)
VALUES (:key, :kind, :payload, :now, :now);

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
UPDATE outbox
SET state = 'done', attempts = attempts + 1, result = :result, updated_at = :now
WHERE id = :id;

-- name: fail_outbox
UPDATE outbox
SET state = :state, attempts = attempts + 1, last_error = :error, updated_at = :now
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
UPDATE outbox SET state = 'pending', attempts = 0, updated_at = :now WHERE state = 'dead';

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

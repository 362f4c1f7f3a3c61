-- Named queries of the PostgreSQL store. Each starts at a "-- name:" line; parameters are
-- bound by name (%(server)s), never formatted in. Text that is sorted uses COLLATE "C" so the
-- order is the same as SQLite's and Python's (code point order).

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext('fhirbridge.migrate'));

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);

-- name: schema_versions
SELECT version FROM schema_version ORDER BY version;

-- name: record_migration
INSERT INTO schema_version (version, name, applied_at) VALUES (%(version)s, %(name)s, %(now)s);

-- name: insert_version
INSERT INTO resource_version
    (server, resource_type, resource_id, version_id, last_updated, raw, received_at, lane_key)
VALUES (%(server)s, %(resource_type)s, %(resource_id)s, %(version_id)s, %(last_updated)s,
        %(raw)s, %(now)s, %(lane_key)s)
ON CONFLICT DO NOTHING
RETURNING seq;

-- name: insert_pending
INSERT INTO pending_version (seq) VALUES (%(seq)s);

-- name: repend_version
-- Puts a journalled version back on the pending list (a replay after a fix).
INSERT INTO pending_version (seq)
SELECT seq FROM resource_version
WHERE server = %(server)s AND resource_type = %(resource_type)s
  AND resource_id = %(resource_id)s AND version_id = %(version_id)s
ON CONFLICT DO NOTHING;

-- name: mark_processed
-- Takes the version off the pending list; changes nothing when it is not there.
DELETE FROM pending_version
WHERE seq = (
    SELECT seq FROM resource_version
    WHERE server = %(server)s AND resource_type = %(resource_type)s
      AND resource_id = %(resource_id)s AND version_id = %(version_id)s
);

-- name: pending
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM pending_version AS p
JOIN resource_version AS v ON v.seq = p.seq
ORDER BY p.seq
LIMIT %(limit)s;

-- name: snapshots
-- The snapshots of several resources of one type at once.
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM snapshot AS s
JOIN resource_version AS v
  ON v.server = s.server AND v.resource_type = s.resource_type
 AND v.resource_id = s.resource_id AND v.version_id = s.version_id
WHERE s.server = %(server)s AND s.resource_type = %(resource_type)s
  AND s.resource_id = ANY(%(ids)s::text[]);

-- name: upsert_snapshot
INSERT INTO snapshot (server, resource_type, resource_id, version_id)
VALUES (%(server)s, %(resource_type)s, %(resource_id)s, %(version_id)s)
ON CONFLICT (server, resource_type, resource_id) DO UPDATE SET version_id = excluded.version_id;

-- name: upsert_encounter
INSERT INTO encounter_index (server, encounter, patient, encounter_class, status, start_at, end_at)
VALUES (%(server)s, %(encounter)s, %(patient)s, %(encounter_class)s, %(status)s,
        %(start_at)s, %(end_at)s)
ON CONFLICT (server, encounter) DO UPDATE SET
    patient = excluded.patient,
    encounter_class = excluded.encounter_class,
    status = excluded.status,
    start_at = excluded.start_at,
    end_at = excluded.end_at;

-- name: delete_encounter
DELETE FROM encounter_index WHERE server = %(server)s AND encounter = %(encounter)s;

-- name: patient_stays
-- The stays of several patients at once, by patient then as stays.
SELECT server, encounter, patient, encounter_class, status, start_at, end_at
FROM encounter_index
WHERE server = %(server)s AND patient = ANY(%(patients)s::text[])
ORDER BY patient, start_at ASC NULLS LAST, encounter COLLATE "C";

-- name: insert_transition
INSERT INTO transition (key, kind, detected_at, note, body)
VALUES (%(key)s, %(kind)s, %(detected_at)s, %(note)s, %(body)s::jsonb)
ON CONFLICT (key) DO NOTHING;

-- name: transitions
SELECT key, detected_at, note, body
FROM transition
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR detected_at >= %(since)s::timestamptz)
ORDER BY id;

-- name: watermark
SELECT instant FROM watermark WHERE server = %(server)s AND resource_type = %(resource_type)s;

-- name: set_watermark
INSERT INTO watermark (server, resource_type, instant, updated_at)
VALUES (%(server)s, %(resource_type)s, %(instant)s, %(now)s)
ON CONFLICT (server, resource_type) DO UPDATE SET
    instant = excluded.instant,
    updated_at = excluded.updated_at;

-- name: insert_outbox
INSERT INTO outbox (key, kind, payload, created_at, updated_at, lane_key)
VALUES (%(key)s, %(kind)s, %(payload)s::jsonb, %(now)s, %(now)s, %(lane_key)s)
ON CONFLICT (key) DO NOTHING
RETURNING id;

-- name: claim_outbox
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE state = 'pending'
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: outbox_item
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE id = %(id)s;

-- name: finish_outbox
-- A leased item counted its attempt when it was claimed.
UPDATE outbox
SET state = 'done', attempts = attempts + CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END,
    result = %(result)s::jsonb, updated_at = %(now)s, claimed_by = NULL, lease_until = NULL
WHERE id = %(id)s;

-- name: fail_outbox
-- A leased item counted its attempt when it was claimed; the lease ends either way.
UPDATE outbox
SET state = %(state)s, attempts = attempts + CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END,
    last_error = %(error)s, updated_at = %(now)s, claimed_by = NULL, lease_until = NULL
WHERE id = %(id)s;

-- name: outbox_depth
SELECT count(*) FROM outbox WHERE state = 'pending';

-- name: outbox_items
SELECT id, key, kind, payload, state, attempts, last_error, result
FROM outbox
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
ORDER BY id;

-- name: release_outbox_dead_letters
UPDATE dead_letter
SET replayed = true
WHERE source = 'outbox' AND NOT replayed
  AND reference IN (SELECT key FROM outbox WHERE state = 'dead');

-- name: requeue_dead_outbox
UPDATE outbox
SET state = 'pending', attempts = 0, updated_at = %(now)s, claimed_by = NULL, lease_until = NULL
WHERE state = 'dead';

-- name: insert_dead_letter
INSERT INTO dead_letter (source, reference, reason, payload, created_at)
VALUES (%(source)s, %(reference)s, %(reason)s, %(payload)s, %(now)s)
RETURNING id;

-- name: dead_letters
SELECT id, source, reference, reason, payload, created_at, replayed
FROM dead_letter
WHERE (%(include_replayed)s OR NOT replayed)
ORDER BY id;

-- name: mark_replayed
UPDATE dead_letter SET replayed = true WHERE id = %(id)s;

-- name: insert_audit
INSERT INTO audit_log (at, action, reference, detail)
VALUES (%(now)s, %(action)s, %(reference)s, %(detail)s::jsonb);

-- name: audit_log
SELECT id, at, action, reference, detail FROM audit_log ORDER BY id DESC LIMIT %(limit)s;

-- name: has_schema_version
SELECT count(*) FROM (SELECT to_regclass('schema_version') AS t) AS r WHERE t IS NOT NULL;

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: writer_lock
-- A session lock (ends with the connection), one per schema and server.
SELECT pg_try_advisory_lock(hashtext('fhirbridge.writer'),
                            hashtext(current_schema() || '|' || %(server)s));

-- name: writer_unlock
SELECT pg_advisory_unlock(hashtext('fhirbridge.writer'),
                          hashtext(current_schema() || '|' || %(server)s));

-- name: lease
SELECT holder, host, pid, command, acquired_at, expires_at, takeovers
FROM lease WHERE name = %(name)s;

-- name: hold_lease
-- A lease held by a lock of its own (the writer): whoever asks has the lock, so it overwrites.
INSERT INTO lease (name, holder, host, pid, command, acquired_at, expires_at)
VALUES (%(name)s, %(holder)s, %(host)s, %(pid)s, %(command)s, %(now)s, NULL)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    host = excluded.host,
    pid = excluded.pid,
    command = excluded.command,
    acquired_at = excluded.acquired_at,
    expires_at = NULL,
    takeovers = lease.takeovers + (lease.holder NOT IN ('', excluded.holder))::int;

-- name: take_lease
-- Takes a free lease (released: holder ''), renews one's own, or takes over one that expired
-- (counted in takeovers); changes no row when another holder's lease still runs.
INSERT INTO lease (name, holder, host, pid, command, acquired_at, expires_at)
VALUES (%(name)s, %(holder)s, %(host)s, %(pid)s, %(command)s, %(now)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    host = excluded.host,
    pid = excluded.pid,
    command = excluded.command,
    acquired_at = CASE WHEN lease.holder = excluded.holder THEN lease.acquired_at
                       ELSE excluded.acquired_at END,
    expires_at = excluded.expires_at,
    takeovers = lease.takeovers + (lease.holder NOT IN ('', excluded.holder))::int
WHERE lease.holder IN ('', excluded.holder)
   OR (lease.expires_at IS NOT NULL AND lease.expires_at < excluded.acquired_at);

-- name: release_lease
-- The row stays, free (holder ''), so that its takeovers keep counting.
UPDATE lease SET holder = '', expires_at = NULL WHERE name = %(name)s AND holder = %(holder)s;

-- name: leases_held
SELECT name FROM lease
WHERE holder = %(holder)s AND starts_with(name, %(prefix)s) AND expires_at >= %(now)s
ORDER BY name COLLATE "C";

-- name: renew_leases
-- Extends the worker's leases that still run (a lease that ran out may have a new holder).
UPDATE lease SET expires_at = %(until)s
WHERE holder = %(holder)s AND starts_with(name, %(prefix)s) AND expires_at >= %(now)s
RETURNING name;

-- name: leases_of_others
SELECT name FROM lease
WHERE holder NOT IN ('', %(holder)s) AND starts_with(name, %(prefix)s) AND expires_at >= %(now)s;

-- name: release_leases
UPDATE lease SET holder = '', expires_at = NULL
WHERE holder = %(holder)s AND starts_with(name, %(prefix)s);

-- name: lease_takeovers
SELECT coalesce(sum(takeovers), 0) FROM lease WHERE starts_with(name, %(prefix)s);

-- name: see_worker
INSERT INTO worker (id, host, pid, command, started_at, seen_until)
VALUES (%(holder)s, %(host)s, %(pid)s, %(command)s, %(now)s, %(until)s)
ON CONFLICT (id) DO UPDATE SET seen_until = excluded.seen_until;

-- name: live_workers
SELECT count(*) FROM worker WHERE seen_until >= %(now)s;

-- name: retire_worker
DELETE FROM worker WHERE id = %(holder)s OR seen_until < %(now)s;

-- name: pending_in_lanes
SELECT v.server, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.raw
FROM pending_version AS p
JOIN resource_version AS v ON v.seq = p.seq
WHERE mod(v.lane_key, %(lane_count)s) = ANY(%(lanes)s::bigint[])
ORDER BY p.seq
LIMIT %(limit)s;

-- name: lease_outbox
-- Leases pending items nobody holds (or whose lease ran out) to one worker; counts the attempt.
-- With lanes, only the items of the patients in those lanes (lane_key % lane_count).
-- SKIP LOCKED: two workers leasing at once get different items.
UPDATE outbox
SET claimed_by = %(holder)s, lease_until = %(until)s, attempts = attempts + 1,
    updated_at = %(now)s
WHERE id IN (
    SELECT id FROM outbox
    WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < %(now)s)
      AND (%(lanes)s::bigint[] IS NULL OR mod(lane_key, %(lane_count)s) = ANY(%(lanes)s::bigint[]))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, key, kind, payload, state, attempts, last_error, result;

-- name: renew_outbox
UPDATE outbox SET lease_until = %(until)s
WHERE claimed_by = %(holder)s AND state = 'pending' AND lease_until >= %(now)s;

-- name: release_outbox
UPDATE outbox SET claimed_by = NULL, lease_until = NULL
WHERE claimed_by = %(holder)s AND state = 'pending';

-- name: leased_outbox
SELECT count(*) FROM outbox WHERE state = 'pending' AND lease_until >= %(now)s;

-- name: open_counter
INSERT INTO subscription_counter (server, subscription, updated_at)
VALUES (%(server)s, %(subscription)s, %(now)s)
ON CONFLICT (server, subscription) DO NOTHING;

-- name: counter
-- Locks the counter row: receivers recording events of one subscription take turns.
SELECT contiguous, highest FROM subscription_counter
WHERE server = %(server)s AND subscription = %(subscription)s
FOR UPDATE;

-- name: insert_event
INSERT INTO subscription_event (server, subscription, number)
VALUES (%(server)s, %(subscription)s, %(number)s)
ON CONFLICT DO NOTHING;

-- name: events_above
SELECT number FROM subscription_event
WHERE server = %(server)s AND subscription = %(subscription)s AND number > %(contiguous)s
ORDER BY number;

-- name: drop_events
DELETE FROM subscription_event
WHERE server = %(server)s AND subscription = %(subscription)s AND number <= %(contiguous)s;

-- name: set_counter
UPDATE subscription_counter
SET contiguous = %(contiguous)s, highest = %(highest)s, updated_at = %(now)s
WHERE server = %(server)s AND subscription = %(subscription)s;

-- 0003: outbox items in patient lanes (PostgreSQL). The worker that holds a lane writes its
-- items, so one patient's writes keep their order across workers. lane_key is the CRC-32 of
-- the patient of the planning transition, as resource_version.lane_key is of a version's;
-- items enqueued before this migration are in lane 0.
ALTER TABLE outbox ADD COLUMN lane_key BIGINT NOT NULL DEFAULT 0;

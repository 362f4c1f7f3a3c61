-- 0003: outbox items in patient lanes (SQLite). The worker that holds a lane writes its
-- items, so one patient's writes keep their order across workers. lane_key is the CRC-32 of
-- the patient of the planning transition, as resource_version.lane_key is of a version's;
-- items enqueued before this migration are in lane 0. (SQLite has one writer: the column
-- keeps the two schemas alike.)
ALTER TABLE outbox ADD COLUMN lane_key INTEGER NOT NULL DEFAULT 0;

-- Scheduled maintenance: every run of a job is recorded, and a job's scheduled time (its slot)
-- is taken by one relay only.

CREATE TABLE sms_maintenance_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL,
    -- The scheduled time this run is for (the time it was started, for a run asked for by hand).
    slot        timestamptz NOT NULL,
    relay_id    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- Rows the job deleted or changed.
    rows        bigint,
    error       text,
    UNIQUE (job, slot)
);

COMMENT ON TABLE sms_maintenance_runs IS
  'One row per maintenance run: job (prune, scrub, retention), the slot it ran for, the relay that '
  'took it, when it started and finished, the rows it changed, and its error if it failed.';

-- The smallest uuid v7 of the given time, so a range of message ids (which sms_uuid_v7() makes
-- time-ordered) stands for a range of enqueue times and is found through the primary key.
CREATE FUNCTION sms_uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid
$$;

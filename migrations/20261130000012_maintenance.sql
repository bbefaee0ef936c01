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

-- The jobs' statements, as functions that run as the schema owner: the relay's role may run
-- them, but holds no DELETE of its own on messages, calls or receipts. Each does one batch of at
-- most p_batch rows and returns the rows it changed; the relay repeats it until a batch falls short.

-- Budget counters of windows that have ended, per-recipient windows that have ended, and the
-- circuit rows of relays that stopped writing them (a live relay rewrites its rows every 30 s).
CREATE FUNCTION sms_maintain_prune() RETURNS bigint
LANGUAGE sql AS $$
WITH usage AS (
    DELETE FROM sms_budget_usage u USING sms_budgets b
     WHERE b.id = u.budget_id AND u.window_start + b.per <= now()
    RETURNING 1
), recipients AS (
    DELETE FROM sms_recipient_budget
     WHERE window_start <= now() - (SELECT recipient_window FROM sms_settings)
    RETURNING 1
), circuits AS (
    DELETE FROM sms_provider_circuits WHERE updated_at < now() - interval '10 minutes'
    RETURNING 1
)
SELECT (SELECT count(*) FROM usage) + (SELECT count(*) FROM recipients) + (SELECT count(*) FROM circuits)
$$;

-- Messages enqueued in the p_lookback before the longest template validity (plus a minute) ended,
-- and past their own validity, lose their params (the code): nothing of theirs can be sent any
-- more. Message ids are time-ordered, so the range is read through the primary key.
CREATE FUNCTION sms_maintain_scrub(p_lookback interval, p_batch integer) RETURNS bigint
LANGUAGE sql AS $$
WITH bounds AS MATERIALIZED (
    SELECT now() - (SELECT coalesce(max(validity), interval '0') FROM sms_templates) - interval '1 minute' AS until
), scrubbed AS (
    UPDATE sms_outbox SET params = '{}'
     WHERE id = ANY (ARRAY(
            SELECT o.id FROM sms_outbox o, bounds
             WHERE o.id >= sms_uuid_v7_floor(bounds.until - p_lookback)
               AND o.id < sms_uuid_v7_floor(bounds.until)
               AND o.params <> '{}' AND o.expires_at <= now()
             LIMIT p_batch
             FOR UPDATE SKIP LOCKED))
    RETURNING 1
)
SELECT count(*) FROM scrubbed
$$;

-- What is past its retention, one kind at a time: messages by enqueue time (their time-ordered
-- ids), provider calls by start (the block-range index), receipts by arrival.
CREATE FUNCTION sms_maintain_expire(p_kind text, p_age interval, p_batch integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint;
BEGIN
    CASE p_kind
        WHEN 'messages' THEN
            DELETE FROM sms_outbox WHERE id = ANY (ARRAY(
                SELECT id FROM sms_outbox WHERE id < sms_uuid_v7_floor(now() - p_age) LIMIT p_batch));
        WHEN 'attempts' THEN
            DELETE FROM sms_attempts WHERE id = ANY (ARRAY(
                SELECT id FROM sms_attempts WHERE started_at < now() - p_age LIMIT p_batch));
        WHEN 'receipts' THEN
            DELETE FROM sms_receipts WHERE id = ANY (ARRAY(
                SELECT id FROM sms_receipts WHERE received_at < now() - p_age LIMIT p_batch));
        ELSE
            RAISE EXCEPTION 'sms_maintain_expire: no kind "%" (messages, attempts, receipts)', p_kind;
    END CASE;
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END $$;

DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['sms_maintain_prune()',
                              'sms_maintain_scrub(interval, integer)',
                              'sms_maintain_expire(text, interval, integer)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp', fn, current_schema());
    END LOOP;
END $$;

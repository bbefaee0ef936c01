-- What the operator commands (`sms-relay messages …`, `templates preview`) read and do, under a
-- role that can read no number and no code: messages with their numbers masked, receipts without
-- their payloads, and the two events an operator may cause run as the schema owner.

-- A phone number as it may be shown: the first four characters and the last two kept, every
-- other one replaced by '•' (+8801712345678 → +880••••••••78), as the relay masks it in logs.
CREATE FUNCTION sms_mask(number text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN length(number) <= 6 THEN number
              ELSE left(number, 4) || repeat('•', length(number) - 6) || right(number, 2) END
$$;

COMMENT ON FUNCTION sms_mask(text) IS
  'A number with all but its first four and last two characters replaced by •.';

CREATE VIEW sms_messages AS
SELECT o.id, o.state::text AS state, o.template, o.locale, o.purpose, o.priority,
       sms_mask(o.recipient) AS recipient, sms_operator(o.recipient) AS operator,
       o.created_at, o.expires_at, o.next_attempt_at, o.attempts AS rounds, o.resends,
       o.sent_at, o.finished_at, o.last_error, o.resend_reason, o.superseded_by
  FROM sms_outbox o;

COMMENT ON VIEW sms_messages IS
  'Every message with its number masked and without its params (the code): what operators see.';

-- The receipts of one message's calls, found through their attempt.
CREATE INDEX sms_receipts_attempt_idx ON sms_receipts (attempt_id) WHERE attempt_id IS NOT NULL;

CREATE VIEW sms_message_receipts AS
SELECT r.id, a.message_id, r.attempt_id, r.received_at, r.source, r.via, r.status_raw,
       r.delivery_status::text AS delivery_status, r.error_code, r.done_at, r.result, r.resent
  FROM sms_receipts r
  JOIN sms_attempts a ON a.id = r.attempt_id;

COMMENT ON VIEW sms_message_receipts IS
  'Matched delivery receipts with their message, without the raw payload: what operators see.';

-- An operator's retry and cancel run as the owner: the operator's role holds no UPDATE on the
-- outbox, and these go through the state machine like every other change.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_retry(uuid, interval) SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION sms_cancel(uuid, text) SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- The message lifecycle kept by the schema: which state changes are possible, the stored fact that a
-- provider accepted a message, params the relay can always render, and claims that name a live relay.

-- Params the relay could never send are refused at enqueue (SR012): keys that are no placeholder of the
-- template, and placeholder values that are too long or hold control characters. With this, every
-- accepted row renders to a bounded text. Runs after sms_outbox_guard (triggers fire in name order),
-- so the older refusals (SR001..SR011) keep their precedence.
CREATE FUNCTION sms_outbox_guard_params() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    allowed text[];
    extra   text[];
    bad     text[];
BEGIN
    SELECT t.placeholders INTO allowed FROM sms_templates t
     WHERE t.name = NEW.template AND t.locale = NEW.locale;
    extra := ARRAY(SELECT k FROM jsonb_object_keys(NEW.params) AS k WHERE k <> ALL (allowed) ORDER BY 1);
    IF cardinality(extra) > 0 THEN
        RAISE EXCEPTION 'sms_outbox: params has % key(s) that are not placeholders of template "%"',
                        cardinality(extra), NEW.template
            USING ERRCODE = 'SR012', HINT = 'Pass exactly the template''s placeholders.';
    END IF;
    bad := ARRAY(
        SELECT p FROM unnest(allowed) AS p
         WHERE CASE jsonb_typeof(NEW.params -> p)
                    WHEN 'string' THEN length(NEW.params ->> p) NOT BETWEEN 1 AND 64
                                       OR (NEW.params ->> p) ~ '[[:cntrl:]]'
                    WHEN 'number' THEN length(NEW.params ->> p) > 20
                    ELSE false END);
    IF cardinality(bad) > 0 THEN
        RAISE EXCEPTION 'sms_outbox: params value for placeholder(s) % cannot be sent (a string must be 1 to 64 characters without control characters, a number at most 20 characters)',
                        array_to_string(bad, ', ')
            USING ERRCODE = 'SR012';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER sms_outbox_guard_params BEFORE INSERT ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION sms_outbox_guard_params();

-- When a provider first accepted the message. Stored, not inferred: a message with sent_at can go
-- back to the queue for a resend, but it can never end failed, expired or cancelled.
ALTER TABLE sms_outbox ADD COLUMN sent_at timestamptz;
COMMENT ON COLUMN sms_outbox.sent_at IS
    'When a provider first accepted this message; set once. A message with sent_at never ends failed, expired or cancelled.';

UPDATE sms_outbox o
   SET sent_at = coalesce((SELECT min(a.finished_at) FROM sms_attempts a
                            WHERE a.message_id = o.id AND a.outcome = 'accepted'), o.finished_at, o.created_at)
 WHERE o.state = 'sent' OR o.resends > 0;
-- Messages that were sent and later closed as unsent (a resend superseded before it went out) are sent.
UPDATE sms_outbox
   SET state = 'sent', finished_at = coalesce(finished_at, now()), resend_reason = NULL, resend_of = NULL,
       last_error = concat('resend not sent: ', last_error)
 WHERE sent_at IS NOT NULL AND state IN ('failed', 'expired', 'cancelled');

ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_sent_stays_sent
    CHECK (sent_at IS NULL OR state IN ('pending', 'sending', 'sent'));
ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_sent_has_time
    CHECK (state <> 'sent' OR sent_at IS NOT NULL);

-- The message state machine: every change of sms_outbox.state must be one of these. `was_sent` is
-- whether a provider had accepted the message before this change (sent_at before it).
--
--   from     to         was_sent  event
--   pending  sending    any       claim
--   pending  cancelled  no        superseded by a newer message (before it was ever sent)
--   pending  sent       yes       a resend withdrawn (superseded, or the earlier copy delivered)
--   sending  sent       any       a provider accepted it
--   sending  pending    any       retry scheduled, released by its relay, or rescued from a dead relay
--   sending  failed     no        bad recipient, unrenderable, out of rounds
--   sending  expired    no        validity ended before a provider accepted it
--   sending  cancelled  no        superseded while claimed
--   sent     pending    yes       resend (a receipt said undelivered, or none came in time)
CREATE FUNCTION sms_transition_allowed(from_state sms_state, to_state sms_state, was_sent boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
           WHEN from_state = to_state THEN true
           WHEN from_state = 'pending' THEN
                to_state = 'sending'
             OR (to_state = 'cancelled' AND NOT was_sent)
             OR (to_state = 'sent' AND was_sent)
           WHEN from_state = 'sending' THEN
                to_state IN ('sent', 'pending')
             OR (to_state IN ('failed', 'expired', 'cancelled') AND NOT was_sent)
           WHEN from_state = 'sent' THEN to_state = 'pending' AND was_sent
           ELSE false
         END
$$;
COMMENT ON FUNCTION sms_transition_allowed(sms_state, sms_state, boolean) IS
    'The message state machine (README "Message lifecycle"): whether a message may move from one state to another.';

-- sent_at is set once, by the move that records the first acceptance (sending -> sent), and then
-- never changes: otherwise clearing it would open the way to an unsent end.
CREATE FUNCTION sms_sent_at_allowed(from_state sms_state, to_state sms_state,
                                    old_sent_at timestamptz, new_sent_at timestamptz)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
           WHEN old_sent_at IS NOT NULL THEN new_sent_at IS NOT DISTINCT FROM old_sent_at
           WHEN new_sent_at IS NOT NULL THEN from_state = 'sending' AND to_state = 'sent'
           ELSE true
         END
$$;
COMMENT ON FUNCTION sms_sent_at_allowed(sms_state, sms_state, timestamptz, timestamptz) IS
    'Whether an update keeps sms_outbox.sent_at set once: only sending -> sent may set it, nothing may change it after.';

CREATE FUNCTION sms_outbox_refuse_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT sms_sent_at_allowed(OLD.state, NEW.state, OLD.sent_at, NEW.sent_at) THEN
        RAISE EXCEPTION 'sms_outbox: sent_at is set once, when a provider first accepts the message'
            USING ERRCODE = 'SR013';
    END IF;
    RAISE EXCEPTION 'sms_outbox: a message cannot move from % to %', OLD.state,
                    NEW.state || CASE WHEN OLD.sent_at IS NOT NULL THEN ' after a provider accepted it' ELSE '' END
        USING ERRCODE = 'SR013';
END $$;

-- Only a change the rules do not allow reaches the function, so allowed updates pay for the WHEN
-- expression alone.
CREATE TRIGGER sms_outbox_transition BEFORE UPDATE OF state, sent_at ON sms_outbox
    FOR EACH ROW WHEN (NOT sms_transition_allowed(OLD.state, NEW.state, OLD.sent_at IS NOT NULL)
                       OR NOT sms_sent_at_allowed(OLD.state, NEW.state, OLD.sent_at, NEW.sent_at))
    EXECUTE FUNCTION sms_outbox_refuse_transition();

-- Superseding: older messages for the same recipient and purpose that are waiting in the queue are
-- cancelled if they were never sent, and a waiting resend of a sent one is withdrawn (it stays sent).
CREATE OR REPLACE FUNCTION sms_outbox_supersede() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sms_outbox o
       SET state = CASE WHEN o.sent_at IS NULL THEN 'cancelled' ELSE 'sent' END::sms_state,
           finished_at = now(), superseded_by = NEW.id,
           last_error = CASE WHEN o.sent_at IS NULL THEN 'superseded by a newer message'
                             ELSE 'resend withdrawn: superseded by a newer message' END,
           resend_reason = NULL, resend_of = NULL
     WHERE o.recipient = NEW.recipient
       AND o.purpose = NEW.purpose
       AND o.state = 'pending'
       AND o.seq < NEW.seq;
    RETURN NULL;
END $$;

-- CREATE OR REPLACE resets a function's security settings: the triggers an INSERT by the auth role
-- fires run as the owner, with the search path pinned, like the other enqueue functions.
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['sms_outbox_guard_params()', 'sms_outbox_supersede()']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp', fn, current_schema());
    END LOOP;
END $$;

-- Attempts arrive in time order, so a block-range index finds a report's window as well as a
-- B-tree does, at a fraction of the upkeep on every send (one index entry fewer per attempt).
DROP INDEX sms_attempts_started_idx;
CREATE INDEX sms_attempts_started_idx ON sms_attempts USING brin (started_at);

-- Waiting and claimed messages apart. In one claim index, the claimed messages (earliest deadlines
-- first, like the waiting ones) sat at its head, and every claim walked past all of them: the claim
-- cost grew with the number in flight. Now the claim index holds waiting messages only, so a claim
-- also writes no entry to it; claims whose lease ran out are found through their own small index.
DROP INDEX sms_outbox_claim_idx;
CREATE INDEX sms_outbox_claim_idx ON sms_outbox (priority, expires_at, next_attempt_at)
    WHERE state = 'pending';
DROP INDEX sms_outbox_due_idx;
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX sms_outbox_lease_idx ON sms_outbox (next_attempt_at) WHERE state = 'sending';
-- Superseding looks for a recipient's waiting messages; with the indexes above on waiting messages
-- only, a planner working from a young table's statistics could pick one of those and walk every
-- waiting message per enqueue. This index answers that lookup exactly.
CREATE INDEX sms_outbox_waiting_recipient_idx ON sms_outbox (recipient, purpose, seq)
    WHERE state = 'pending';

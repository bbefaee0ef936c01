-- An operator's two events on one message, as functions that go through the same transition table
-- as every other change: retry (one more round for a message that failed, or a waiting retry
-- brought forward) and cancel (a waiting message never sent; a waiting resend is withdrawn
-- instead). Both refuse with SQLSTATE SR014 and say why when the message's state does not allow
-- the event, and lock the row first so a claim running at the same time either sees the change or
-- is waited for.

-- A failed message that was never sent may be tried again while its code is still valid: the one
-- transition out of a final state.
CREATE OR REPLACE FUNCTION sms_transition_allowed(from_state sms_state, to_state sms_state, was_sent boolean)
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
           WHEN from_state = 'failed' THEN to_state = 'pending' AND NOT was_sent
           ELSE false
         END
$$;

-- Retry: a `failed` message comes back as `pending`, due now (its next round is one more than it
-- had: if that fails too, it fails again); a `pending` one waiting for a later retry becomes due
-- now. Refused when the message was sent, is being sent, has ended otherwise, or has less than
-- `margin` of validity left (the relay would only expire it).
CREATE FUNCTION sms_retry(message_id uuid, margin interval DEFAULT interval '3 seconds')
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m sms_outbox;
BEGIN
    SELECT * INTO m FROM sms_outbox o WHERE o.id = message_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sms_retry: no message %', message_id USING ERRCODE = 'SR014';
    END IF;
    IF m.sent_at IS NOT NULL THEN
        RAISE EXCEPTION 'sms_retry: message % was sent already (state %)', message_id, m.state
            USING ERRCODE = 'SR014';
    END IF;
    IF m.state NOT IN ('pending', 'failed') THEN
        RAISE EXCEPTION 'sms_retry: message % is %, only a failed or waiting message can be retried',
            message_id, m.state USING ERRCODE = 'SR014';
    END IF;
    IF m.expires_at - margin <= now() THEN
        RAISE EXCEPTION 'sms_retry: the code of message % is no longer valid (expires %)',
            message_id, m.expires_at USING ERRCODE = 'SR014';
    END IF;
    UPDATE sms_outbox o
       SET state = 'pending', next_attempt_at = now(), finished_at = NULL, claimed_by = NULL,
           last_error = concat('retried by an operator; before: ', m.last_error)
     WHERE o.id = message_id;
    PERFORM pg_notify('sms_relay_wakeup', '');
END $$;
COMMENT ON FUNCTION sms_retry(uuid, interval) IS
    'Operator retry: a failed (never sent) or waiting message whose code is still valid is due at once. SQLSTATE SR014 says why when it cannot be.';

-- Cancel: a waiting message that was never sent ends `cancelled`; a waiting resend of a sent one
-- is withdrawn (it stays `sent`). A message being sent cannot be cancelled (a provider may be
-- accepting it right now); a final one has nothing left to cancel.
CREATE FUNCTION sms_cancel(message_id uuid, reason text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m sms_outbox;
BEGIN
    IF coalesce(btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'sms_cancel: give a reason' USING ERRCODE = 'SR014';
    END IF;
    SELECT * INTO m FROM sms_outbox o WHERE o.id = message_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sms_cancel: no message %', message_id USING ERRCODE = 'SR014';
    END IF;
    IF m.state <> 'pending' THEN
        RAISE EXCEPTION 'sms_cancel: message % is %, only a waiting message can be cancelled',
            message_id, m.state USING ERRCODE = 'SR014';
    END IF;
    UPDATE sms_outbox o
       SET state = CASE WHEN m.sent_at IS NULL THEN 'cancelled' ELSE 'sent' END::sms_state,
           finished_at = now(), claimed_by = NULL, resend_reason = NULL, resend_of = NULL,
           resends = CASE WHEN m.sent_at IS NULL THEN o.resends ELSE o.resends - 1 END,
           last_error = CASE WHEN m.sent_at IS NULL THEN concat('cancelled by an operator: ', reason)
                             ELSE concat('resend withdrawn by an operator: ', reason) END
     WHERE o.id = message_id;
END $$;
COMMENT ON FUNCTION sms_cancel(uuid, text) IS
    'Operator cancel: a waiting message never sent ends cancelled; a waiting resend is withdrawn (the message stays sent). SQLSTATE SR014 says why when it cannot be.';

-- A withdrawn resend is not counted, whichever way it was withdrawn: a delivered receipt for the
-- earlier copy already took it back from `resends`; a newer message and an operator now do too.
COMMENT ON COLUMN sms_outbox.resends IS
    'Resends of this sent message that a receipt (or its absence) queued and nothing withdrew.';

CREATE OR REPLACE FUNCTION sms_outbox_supersede() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sms_outbox o
       SET state = CASE WHEN o.sent_at IS NULL THEN 'cancelled' ELSE 'sent' END::sms_state,
           finished_at = now(), superseded_by = NEW.id,
           last_error = CASE WHEN o.sent_at IS NULL THEN 'superseded by a newer message'
                             ELSE 'resend withdrawn: superseded by a newer message' END,
           resends = CASE WHEN o.sent_at IS NULL THEN o.resends ELSE o.resends - 1 END,
           resend_reason = NULL, resend_of = NULL
     WHERE o.recipient = NEW.recipient
       AND o.purpose = NEW.purpose
       AND o.state = 'pending'
       AND o.seq < NEW.seq;
    RETURN NULL;
END $$;
-- CREATE OR REPLACE resets its security settings: the trigger runs as the owner, search path pinned.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_outbox_supersede() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

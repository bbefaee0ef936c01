-- A resend is one more code sent: it counts against the budgets like an enqueue, and one that a
-- spent budget refuses leaves the message sent, with the reason, instead of failing the receipt
-- (or the sweep) that asked for it.
CREATE OR REPLACE FUNCTION sms_resend(p_attempt bigint, p_reason text, p_max_resends integer, p_expiry_margin interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    att sms_attempts;
    msg sms_outbox;
BEGIN
    SELECT * INTO att FROM sms_attempts WHERE id = p_attempt FOR UPDATE;
    IF NOT FOUND OR att.outcome <> 'accepted' OR att.delivery_status IS NOT DISTINCT FROM 'delivered' THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE sms_outbox o
           SET state = 'pending', next_attempt_at = now(), finished_at = NULL, claimed_by = NULL,
               resends = o.resends + 1, resend_reason = p_reason, resend_skip = att.provider, resend_of = att.id,
               last_error = p_reason
         WHERE o.id = att.message_id AND o.attempts = att.attempt_number
           AND o.state = 'sent' AND o.resends < p_max_resends
           AND o.expires_at > now() + p_expiry_margin
           AND NOT EXISTS (SELECT 1 FROM sms_outbox n
                            WHERE n.recipient = o.recipient AND n.purpose = o.purpose AND n.supersede AND n.seq > o.seq)
        RETURNING o.* INTO msg;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        PERFORM sms_budget_spend(msg.recipient, msg.purpose, msg.template, NULL);
    EXCEPTION WHEN SQLSTATE 'SR016' THEN
        UPDATE sms_outbox SET last_error = concat('resend not sent: ', SQLERRM) WHERE id = att.message_id;
        RETURN false;
    END;
    PERFORM pg_notify('sms_relay_wakeup', '');
    RETURN true;
END $$;

-- sms_resend() runs as its caller (the relay's role), which holds no rights on the budget tables:
-- the spending runs as the owner, as it does under the enqueue guard. (Lifting the budgets still
-- depends on the session's user, which a SECURITY DEFINER function does not change.)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_budget_spend(text, text, text, text) SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

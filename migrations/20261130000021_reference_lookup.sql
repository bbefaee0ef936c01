-- Recording a round writes one index entry fewer: receipts that carry our reference find the
-- call through the message's seq instead of an index of every call's reference.
--
-- Every accepted call went into five B-tree indexes of sms_attempts. One of them, on client_ref,
-- served a single lookup: a receipt that names the call by our reference rather than the
-- provider's id. Our reference starts with the message's seq in base 36, so the message is found
-- by its seq (an index of sms_outbox that no round changes, written once per enqueue), and its few
-- calls by the call key's index on message_id.

CREATE UNIQUE INDEX sms_outbox_seq_key ON sms_outbox (seq);
DROP INDEX sms_attempts_client_ref_idx;

-- The message seq a client reference (`<base-36 seq>r<round>s<step>`, as the relay writes it)
-- names; NULL for anything else, including a seq beyond bigint.
CREATE FUNCTION sms_reference_seq(ref text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN v <= 9223372036854775807 THEN v::bigint END
      FROM (SELECT (SELECT sum((strpos('0123456789abcdefghijklmnopqrstuvwxyz', substr(d, i, 1)) - 1)
                               * 36::numeric ^ (length(d) - i))
                      FROM generate_series(1, length(d)) AS i) AS v
              FROM (SELECT substring(ref FROM '^([0-9a-z]{1,13})r[0-9]+s[0-9]+$') AS d) AS p) AS s
$$;
COMMENT ON FUNCTION sms_reference_seq(text) IS
    'The sms_outbox.seq a client reference names (NULL if it is not one of ours).';

-- Receipts match a call by the provider's id, else by our reference through the message.
CREATE OR REPLACE FUNCTION sms_apply_receipt(
    p_receipt bigint, p_providers text[], p_max_resends integer, p_expiry_margin interval,
    OUT result text, OUT resent boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r   sms_receipts;
    att sms_attempts;
BEGIN
    -- Locked first (then the attempt, then the message), so two relays matching the same stored
    -- receipt again take turns, and the second sees it applied.
    SELECT * INTO r FROM sms_receipts WHERE id = p_receipt FOR UPDATE;
    IF r.result <> 'unmatched' THEN
        result := r.result;
        resent := r.resent;
        RETURN;
    END IF;
    resent := false;
    -- By the provider's id for the call, else by our reference for it, whose seq names the
    -- message: its calls are found through the call key.
    SELECT * INTO att FROM sms_attempts a
     WHERE a.provider = ANY (p_providers) AND a.outcome = 'accepted'
       AND a.provider_message_id = r.provider_message_id
     ORDER BY a.id DESC LIMIT 1
     FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO att FROM sms_attempts a
         WHERE a.message_id = (SELECT o.id FROM sms_outbox o WHERE o.seq = sms_reference_seq(r.client_ref))
           AND a.provider = ANY (p_providers) AND a.outcome = 'accepted'
           AND a.client_ref = r.client_ref
         ORDER BY a.id DESC LIMIT 1
         FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        result := 'unmatched';
        RETURN;
    END IF;

    IF sms_delivery_rank(r.delivery_status) > sms_delivery_rank(att.delivery_status) THEN
        UPDATE sms_attempts
           SET delivery_status = r.delivery_status, delivery_error = r.error_code, receipt_at = r.received_at,
               delivered_at = CASE WHEN r.delivery_status = 'delivered' THEN coalesce(r.done_at, r.received_at) END,
               cost = coalesce(r.cost, cost),
               currency = CASE WHEN r.cost IS NULL THEN currency ELSE r.currency END
         WHERE id = att.id;
        result := 'applied';
        IF r.delivery_status IN ('undelivered', 'failed', 'expired') AND NOT r.permanent THEN
            resent := sms_resend(att.id,
                                 format('receipt from %s said %s%s', att.provider, r.delivery_status,
                                        coalesce(' (' || r.error_code || ')', '')),
                                 p_max_resends, p_expiry_margin);
        ELSIF r.delivery_status = 'delivered' THEN
            -- Not yet sent (waiting, and no relay sending it right now): the resend is withdrawn.
            UPDATE sms_outbox o
               SET state = 'sent', finished_at = now(), resends = o.resends - 1, resend_reason = NULL,
                   resend_of = NULL, last_error = 'resend withdrawn: the earlier copy was delivered'
             WHERE o.id = att.message_id AND o.state = 'pending' AND o.resend_of = att.id
               AND sms_free(o.seq);
        END IF;
    ELSE
        result := 'stale';
    END IF;
    UPDATE sms_receipts SET attempt_id = att.id, result = sms_apply_receipt.result, resent = sms_apply_receipt.resent
     WHERE id = p_receipt;
END $$;


-- A new function may be run by anyone until the roles script takes that away; take it away here
-- if that script has run, and give it to the relay's role.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_relay_worker') THEN
        REVOKE ALL ON FUNCTION sms_reference_seq(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION sms_reference_seq(text) TO sms_relay_worker;
    END IF;
END $$;

-- Delivery receipts (issue 4): canonical delivery status on each attempt, raw receipts for audit,
-- receipt-driven resends, and the destination's country and operator on each attempt so that
-- reports never need the phone number.

CREATE TYPE sms_delivery AS ENUM ('queued', 'enroute', 'delivered', 'undelivered', 'failed', 'expired', 'unknown');
COMMENT ON TYPE sms_delivery IS
  'Canonical delivery status from receipts. Intermediate: queued (the provider holds it), enroute '
  '(handed to the carrier). Final: delivered; undelivered (the carrier could not deliver it); failed '
  '(the provider refused or dropped it); expired (its validity ran out first); unknown (no one knows, '
  'or no final receipt came within receipts.unknown_after_ms; a later final receipt replaces it).';

-- Receipts only ever move an attempt up this order; equal final ranks keep the first.
CREATE FUNCTION sms_delivery_rank(s sms_delivery) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE s WHEN 'queued' THEN 1 WHEN 'enroute' THEN 2 WHEN 'unknown' THEN 3
                WHEN 'delivered' THEN 4 WHEN 'undelivered' THEN 4 WHEN 'failed' THEN 4 WHEN 'expired' THEN 4
                ELSE 0 END
$$;

-- Country by the longest matching calling-code prefix; add rows for more destinations (relays read
-- the table when they start; the relay computes country and operator itself, with the same rules
-- as sms_country() and sms_operator() below, which serve older rows and analysts).
CREATE TABLE sms_country_prefixes (
    prefix  text PRIMARY KEY CHECK (prefix ~ '^\+[1-9][0-9]{0,5}$'),
    country char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$')
);
INSERT INTO sms_country_prefixes (prefix, country) VALUES
    ('+880', 'BD'), ('+91', 'IN'), ('+977', 'NP'), ('+94', 'LK'), ('+92', 'PK'), ('+95', 'MM'),
    ('+60', 'MY'), ('+65', 'SG'), ('+971', 'AE'), ('+966', 'SA'), ('+974', 'QA'), ('+965', 'KW'),
    ('+968', 'OM'), ('+973', 'BH'), ('+44', 'GB'), ('+1', 'US'), ('+61', 'AU'), ('+49', 'DE'),
    ('+39', 'IT'), ('+33', 'FR');

CREATE FUNCTION sms_country(recipient text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce((SELECT p.country::text FROM sms_country_prefixes p
                    WHERE starts_with(recipient, p.prefix)
                    ORDER BY length(p.prefix) DESC LIMIT 1), 'ZZ')
$$;
COMMENT ON FUNCTION sms_country(text) IS 'ISO country of an E.164 number from sms_country_prefixes; ZZ when none matches.';

-- Bangladesh mobile operators by prefix (DESIGN §5). Numbers port between operators since 2018,
-- so this is the operator the number was issued by.
CREATE FUNCTION sms_operator(recipient text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN recipient ~ '^\+8801[3-9][0-9]{8}$' THEN
              CASE substr(recipient, 6, 1)
                   WHEN '3' THEN 'Grameenphone' WHEN '7' THEN 'Grameenphone'
                   WHEN '4' THEN 'Banglalink'   WHEN '9' THEN 'Banglalink'
                   WHEN '6' THEN 'Robi'         WHEN '8' THEN 'Robi'
                   WHEN '5' THEN 'Teletalk' END
              WHEN recipient LIKE '+880%' THEN 'other BD'
              ELSE 'international' END
$$;
COMMENT ON FUNCTION sms_operator(text) IS
  'Bangladesh operator from the number prefix: 013/017 Grameenphone, 014/019 Banglalink, 016/018 Robi, '
  '015 Teletalk; "other BD" for other +880 numbers, "international" elsewhere.';

ALTER TABLE sms_attempts
    ADD COLUMN country         text,
    ADD COLUMN operator        text,
    ADD COLUMN cause           text CHECK (cause IN ('first', 'fallback', 'retry', 'resend')),
    ADD COLUMN resend_reason   text,
    ADD COLUMN delivery_status sms_delivery,
    ADD COLUMN delivery_error  text,
    ADD COLUMN delivered_at    timestamptz,
    ADD COLUMN receipt_at      timestamptz,
    ADD COLUMN receipt_checked_at timestamptz;

COMMENT ON COLUMN sms_attempts.country IS 'Destination country (sms_country), so reports need no number.';
COMMENT ON COLUMN sms_attempts.operator IS 'Destination operator (sms_operator), so reports need no number.';
COMMENT ON COLUMN sms_attempts.cause IS
  'Why this call was made: first (the message''s first call), fallback (an earlier provider in the same '
  'round failed), retry (a later round after every provider failed, or after a lease ran out), resend '
  '(a receipt said undelivered, or none came in time; see resend_reason).';
COMMENT ON COLUMN sms_attempts.resend_reason IS 'For a resend round: what the previous attempt''s receipt said, or that none came.';
COMMENT ON COLUMN sms_attempts.delivery_status IS 'Latest canonical status from receipts; NULL until the first receipt.';
COMMENT ON COLUMN sms_attempts.delivery_error IS 'The provider''s error code from the receipt that set delivery_status.';
COMMENT ON COLUMN sms_attempts.delivered_at IS
  'When the message was delivered: the carrier''s done time where the receipt gives one with a time zone '
  '(Infobip doneAt), else when the delivered receipt arrived.';
COMMENT ON COLUMN sms_attempts.receipt_at IS 'When the receipt that set delivery_status arrived (NULL for the no-receipt unknown).';
COMMENT ON COLUMN sms_attempts.receipt_checked_at IS 'When a report API was last asked about this attempt (polling providers).';

-- Rows from before this migration: derive what can be derived.
UPDATE sms_attempts a
   SET country = sms_country(o.recipient), operator = sms_operator(o.recipient)
  FROM sms_outbox o WHERE o.id = a.message_id;
UPDATE sms_attempts a
   SET cause = CASE WHEN a.chain_step > (SELECT min(b.chain_step) FROM sms_attempts b
                                          WHERE b.message_id = a.message_id AND b.attempt_number = a.attempt_number)
                    THEN 'fallback'
                    WHEN a.attempt_number = 1 THEN 'first' ELSE 'retry' END;

-- Receipts match attempts by the provider's id or by our reference.
CREATE INDEX sms_attempts_provider_message_idx ON sms_attempts (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX sms_attempts_client_ref_idx ON sms_attempts (client_ref);
-- Accepted attempts still waiting for a final receipt, per provider by age (no-receipt resends, the
-- unknown window and report polling scan this, always for given providers; rows leave it when a
-- final status arrives).
CREATE INDEX sms_attempts_awaiting_receipt_idx ON sms_attempts (provider, finished_at)
    WHERE outcome = 'accepted' AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute'));

-- Every receipt as received. The relay reads it; analysts do not (payloads hold phone numbers).
CREATE TABLE sms_receipts (
    id                  bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at         timestamptz  NOT NULL DEFAULT now(),
    -- The provider kind the receipt came from: twilio, vonage, infobip, alpha_sms, simulator.
    source              text         NOT NULL,
    via                 text         NOT NULL CHECK (via IN ('webhook', 'poll')),
    -- Source, message id, status and error: a repeat of the same receipt is stored once.
    dedupe_key          text         NOT NULL UNIQUE,
    provider_message_id text         NOT NULL,
    client_ref          text,
    status_raw          text         NOT NULL,
    delivery_status     sms_delivery NOT NULL,
    error_code          text,
    done_at             timestamptz,
    -- The attempt it was matched to, if any.
    attempt_id          bigint,
    -- The receipt says the number itself cannot receive (opted out, not in service, barred).
    permanent           boolean      NOT NULL DEFAULT false,
    cost                numeric(14, 6),
    currency            char(3),
    -- applied: it moved the attempt's status; stale: the attempt already had this or a later status;
    -- unmatched: no attempt of a provider of this kind has this id (yet: unmatched receipts are
    -- matched again for a while, in case the attempt row was written after the receipt came).
    result              text         NOT NULL CHECK (result IN ('applied', 'stale', 'unmatched')),
    -- Set when this receipt put the message back in the queue for a resend.
    resent              boolean      NOT NULL DEFAULT false,
    payload             jsonb        NOT NULL
);
CREATE INDEX sms_receipts_received_idx ON sms_receipts (received_at);
CREATE INDEX sms_receipts_unmatched_idx ON sms_receipts (received_at) WHERE result = 'unmatched';
COMMENT ON TABLE sms_receipts IS 'Delivery receipts as received (webhooks and report polling), for audit. Holds phone numbers: relay only.';

-- Receipt-driven resends: how often, why, and which provider to move past.
ALTER TABLE sms_outbox
    ADD COLUMN resends       integer NOT NULL DEFAULT 0 CHECK (resends >= 0),
    ADD COLUMN resend_reason text,
    ADD COLUMN resend_skip   text,
    ADD COLUMN resend_of     bigint;
COMMENT ON COLUMN sms_outbox.resends IS 'How many times a receipt (or its absence) put this sent message back in the queue.';
COMMENT ON COLUMN sms_outbox.resend_reason IS 'Why the pending resend round runs; the claim moves it to the round''s attempts.';
COMMENT ON COLUMN sms_outbox.resend_skip IS 'The provider whose attempt was not delivered; the resend round starts with the next one.';
COMMENT ON COLUMN sms_outbox.resend_of IS 'While a resend is pending: the attempt it replaces (a delivered receipt for it withdraws the resend).';

-- Puts a sent message back in the queue because attempt `p_attempt` did not deliver it. Only if
-- that attempt belongs to the message's latest round and no delivered receipt has come for it (the
-- attempt row is locked first, so a receipt arriving meanwhile is seen), the message is still
-- `sent`, has resends left, is valid for longer than the margin, and no newer message for the same
-- recipient and purpose superseded it. The resend round starts with the provider after this one.
CREATE FUNCTION sms_resend(p_attempt bigint, p_reason text, p_max_resends integer, p_expiry_margin interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    att sms_attempts;
BEGIN
    SELECT * INTO att FROM sms_attempts WHERE id = p_attempt FOR UPDATE;
    IF NOT FOUND OR att.outcome <> 'accepted' OR att.delivery_status IS NOT DISTINCT FROM 'delivered' THEN
        RETURN false;
    END IF;
    UPDATE sms_outbox o
       SET state = 'pending', next_attempt_at = now(), finished_at = NULL, claimed_by = NULL,
           resends = o.resends + 1, resend_reason = p_reason, resend_skip = att.provider, resend_of = att.id,
           last_error = p_reason
     WHERE o.id = att.message_id AND o.attempts = att.attempt_number
       AND o.state = 'sent' AND o.resends < p_max_resends
       AND o.expires_at > now() + p_expiry_margin
       AND NOT EXISTS (SELECT 1 FROM sms_outbox n
                        WHERE n.recipient = o.recipient AND n.purpose = o.purpose AND n.supersede AND n.seq > o.seq);
    IF FOUND THEN
        PERFORM pg_notify('sms_relay_wakeup', '');
        RETURN true;
    END IF;
    RETURN false;
END $$;

-- Applies stored receipt `p_receipt` to its attempt: matched among accepted attempts of
-- `p_providers` by the provider's id or our client reference; moves the status up (never down: a
-- final status is never replaced by an intermediate one, and the first final status stays; only
-- `unknown` gives way to a later final one); asks for a resend when it says the code did not
-- arrive and the number can receive; and a delivered receipt takes back a resend not yet claimed.
-- Returns applied, stale or unmatched, and whether a resend was queued.
CREATE FUNCTION sms_apply_receipt(
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
    SELECT * INTO att FROM sms_attempts a
     WHERE a.provider = ANY (p_providers) AND a.outcome = 'accepted'
       AND (a.provider_message_id = r.provider_message_id OR a.client_ref = r.client_ref)
     ORDER BY a.id DESC LIMIT 1
     FOR UPDATE;
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
            -- Not yet sent (queued, released, or waiting to retry): the resend is withdrawn.
            UPDATE sms_outbox o
               SET state = 'sent', finished_at = now(), resends = o.resends - 1, resend_reason = NULL,
                   resend_of = NULL, last_error = 'resend withdrawn: the earlier copy was delivered'
             WHERE o.id = att.message_id AND o.state = 'pending' AND o.resend_of = att.id;
        END IF;
    ELSE
        result := 'stale';
    END IF;
    UPDATE sms_receipts SET attempt_id = att.id, result = sms_apply_receipt.result, resent = sms_apply_receipt.resent
     WHERE id = p_receipt;
END $$;

-- Records one receipt: stores it as received (once per dedupe key; a repeat returns 'duplicate')
-- and applies it (sms_apply_receipt).
CREATE FUNCTION sms_record_receipt(
    p_source text, p_via text, p_providers text[], p_dedupe_key text, p_provider_message_id text,
    p_client_ref text, p_status_raw text, p_status sms_delivery, p_error_code text, p_permanent boolean,
    p_done_at timestamptz, p_cost numeric, p_currency text, p_payload jsonb, p_max_resends integer,
    p_expiry_margin interval, OUT result text, OUT resent boolean)
LANGUAGE plpgsql AS $$
DECLARE
    receipt_id bigint;
BEGIN
    INSERT INTO sms_receipts (source, via, dedupe_key, provider_message_id, client_ref, status_raw,
                              delivery_status, error_code, permanent, done_at, cost, currency, result, payload)
    VALUES (p_source, p_via, p_dedupe_key, p_provider_message_id, p_client_ref, p_status_raw,
            p_status, p_error_code, p_permanent, p_done_at, p_cost, p_currency, 'unmatched', p_payload)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id INTO receipt_id;
    IF receipt_id IS NULL THEN
        result := 'duplicate';
        resent := false;
        RETURN;
    END IF;
    SELECT a.result, a.resent INTO result, resent
      FROM sms_apply_receipt(receipt_id, p_providers, p_max_resends, p_expiry_margin) a;
END $$;

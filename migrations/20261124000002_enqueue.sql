-- The auth backend's interface: sms_enqueue() and the guard every INSERT INTO sms_outbox passes through.
--
-- Refusals raise their own SQLSTATE (class SR) so callers can branch without parsing text:
--   SR001 recipient is not E.164          SR005 expires_at is not in the future
--   SR002 unknown template/locale         SR006 expires_at is later than the template's stated validity
--   SR003 params is not a JSON object     SR007 recipient is outside the allow-list
--   SR004 params misses a placeholder     SR008 recipient is over the per-recipient rate limit
--   SR009 a new row must be pending with no attempts
--   SR010 priority is not 0..9               SR011 idempotency_key is empty or over 200 characters
-- Error messages never contain the phone number or the params (they hold the code).

CREATE FUNCTION sms_outbox_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tpl      sms_templates;
    cfg      sms_settings;
    missing  text[];
    recent   integer;
BEGIN
    IF NEW.recipient IS NULL OR NEW.recipient !~ '^\+[1-9][0-9]{6,14}$' THEN
        RAISE EXCEPTION 'sms_outbox: recipient is not an E.164 number'
            USING ERRCODE = 'SR001', HINT = 'Use + then country code and number, 7 to 15 digits, e.g. +8801712345678.';
    END IF;

    NEW.locale := coalesce(NEW.locale, 'en');
    SELECT * INTO tpl FROM sms_templates t WHERE t.name = NEW.template AND t.locale = NEW.locale;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sms_outbox: unknown template "%" for locale "%"', NEW.template, NEW.locale
            USING ERRCODE = 'SR002';
    END IF;

    IF NEW.params IS NULL OR jsonb_typeof(NEW.params) <> 'object' THEN
        RAISE EXCEPTION 'sms_outbox: params must be a JSON object'
            USING ERRCODE = 'SR003';
    END IF;
    missing := ARRAY(
        SELECT p FROM unnest(tpl.placeholders) AS p
        WHERE coalesce(jsonb_typeof(NEW.params -> p), 'missing') NOT IN ('string', 'number'));
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'sms_outbox: params lack a string or number for placeholder(s) %', array_to_string(missing, ', ')
            USING ERRCODE = 'SR004';
    END IF;

    IF NEW.expires_at IS NULL THEN
        NEW.expires_at := now() + tpl.validity;
    ELSIF NEW.expires_at <= now() THEN
        RAISE EXCEPTION 'sms_outbox: expires_at is not in the future'
            USING ERRCODE = 'SR005';
    ELSIF NEW.expires_at > now() + tpl.validity THEN
        RAISE EXCEPTION 'sms_outbox: expires_at is later than template "%" says (valid for %)', NEW.template, tpl.validity
            USING ERRCODE = 'SR006', HINT = 'The message text states its validity; the code must not outlive it.';
    END IF;

    IF EXISTS (SELECT 1 FROM sms_allowed_prefixes)
       AND NOT EXISTS (SELECT 1 FROM sms_allowed_prefixes a WHERE starts_with(NEW.recipient, a.prefix)) THEN
        RAISE EXCEPTION 'sms_outbox: recipient country is not in sms_allowed_prefixes'
            USING ERRCODE = 'SR007';
    END IF;

    IF NEW.priority IS NULL OR NEW.priority NOT BETWEEN 0 AND 9 THEN
        RAISE EXCEPTION 'sms_outbox: priority must be 0 (most urgent) to 9'
            USING ERRCODE = 'SR010';
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND length(NEW.idempotency_key) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'sms_outbox: idempotency_key must be 1 to 200 characters'
            USING ERRCODE = 'SR011';
    END IF;

    -- Fixed-window counter per recipient; the row lock serialises enqueues for that recipient only.
    SELECT * INTO cfg FROM sms_settings;
    INSERT INTO sms_recipient_budget AS b (recipient, window_start, used)
    VALUES (NEW.recipient, now(), 1)
    ON CONFLICT (recipient) DO UPDATE
        SET window_start = CASE WHEN b.window_start <= now() - cfg.recipient_window THEN now() ELSE b.window_start END,
            used = CASE WHEN b.window_start <= now() - cfg.recipient_window THEN 1 ELSE b.used + 1 END
    RETURNING used INTO recent;
    IF recent > cfg.recipient_limit THEN
        RAISE EXCEPTION 'sms_outbox: recipient is over the rate limit (% per %)', cfg.recipient_limit, cfg.recipient_window
            USING ERRCODE = 'SR008';
    END IF;

    IF NEW.state IS DISTINCT FROM 'pending' OR NEW.attempts IS DISTINCT FROM 0 OR NEW.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'sms_outbox: a new message must be pending with no attempts'
            USING ERRCODE = 'SR009';
    END IF;

    -- After the budget row lock: per recipient, seq follows commit order.
    NEW.seq := nextval('sms_outbox_seq');
    NEW.id := coalesce(NEW.id, sms_uuid_v7());
    NEW.supersede := coalesce(NEW.supersede, true);
    NEW.purpose := coalesce(NEW.purpose, NEW.template);
    NEW.created_at := now();
    NEW.next_attempt_at := least(greatest(coalesce(NEW.next_attempt_at, now()), now()), NEW.expires_at);
    NEW.superseded_by := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER sms_outbox_guard BEFORE INSERT ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION sms_outbox_guard();

-- Older unsent codes for the same recipient and purpose are cancelled, not deleted. "Older" is by
-- seq, so of several rows one INSERT adds, the last one stays. A message in flight is left to
-- finish, but the relay never retries or re-sends it (it checks for a newer one the same way).
CREATE FUNCTION sms_outbox_supersede() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sms_outbox o
       SET state = 'cancelled', finished_at = now(), superseded_by = NEW.id,
           last_error = 'superseded by a newer message'
     WHERE o.recipient = NEW.recipient
       AND o.purpose = NEW.purpose
       AND o.state = 'pending'
       AND o.seq < NEW.seq;
    RETURN NULL;
END $$;

CREATE TRIGGER sms_outbox_supersede AFTER INSERT ON sms_outbox
    FOR EACH ROW WHEN (NEW.supersede) EXECUTE FUNCTION sms_outbox_supersede();

-- Wake an idle relay when new work commits. Deferred to commit time, so a relay that registered
-- as idle while this transaction was open is still told; NOTIFY is never sent for a rollback.
CREATE FUNCTION sms_outbox_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sms_relay_sleepers WHERE since > now() - interval '1 minute') THEN
        PERFORM pg_notify('sms_relay_wakeup', '');
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER sms_outbox_wake AFTER INSERT ON sms_outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sms_outbox_wake();

CREATE FUNCTION sms_enqueue(
    recipient       text,
    template        text,
    params          jsonb       DEFAULT '{}',
    expires_at      timestamptz DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    priority        integer     DEFAULT 5,
    locale          text        DEFAULT 'en',
    purpose         text        DEFAULT NULL,
    supersede       boolean     DEFAULT true
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
BEGIN
    IF sms_enqueue.idempotency_key IS NOT NULL THEN
        SELECT o.id INTO new_id FROM sms_outbox o WHERE o.idempotency_key = sms_enqueue.idempotency_key;
        IF FOUND THEN
            RETURN new_id;
        END IF;
    END IF;

    INSERT INTO sms_outbox (recipient, template, params, expires_at, idempotency_key, priority, locale,
                            purpose, supersede)
    VALUES (sms_enqueue.recipient, sms_enqueue.template, sms_enqueue.params, sms_enqueue.expires_at,
            sms_enqueue.idempotency_key, sms_enqueue.priority, sms_enqueue.locale, sms_enqueue.purpose,
            coalesce(sms_enqueue.supersede, true))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NULL THEN
        -- A concurrent transaction committed the same key first.
        SELECT o.id INTO new_id FROM sms_outbox o WHERE o.idempotency_key = sms_enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END $$;

COMMENT ON FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean) IS
    'Enqueue one SMS inside the caller''s transaction; returns the message id. See README "SQL interface".';

-- Budgets: limits on how many codes may be enqueued per hour or day, per purpose, so that an
-- SMS-pumping attack (bots requesting codes for numbers whose operators pay per message) is
-- stopped before anything is spent, and a flood of one purpose never touches another's.
--
-- New refusals (class SR, like the others):
--   SR015 the caller key (client IP, account, device: the auth backend's choice) is over its limit
--   SR016 a budget of this purpose is spent (everything, a destination prefix, an operator, a template)
-- SR008 (the per-recipient limit) now counts per recipient and purpose: login codes can no longer
-- lock a number out of its admin 2FA codes.

-- The per-recipient window, now per purpose.
ALTER TABLE sms_recipient_budget ADD COLUMN purpose text NOT NULL DEFAULT '';
ALTER TABLE sms_recipient_budget ALTER COLUMN purpose DROP DEFAULT;
ALTER TABLE sms_recipient_budget DROP CONSTRAINT sms_recipient_budget_pkey;
ALTER TABLE sms_recipient_budget ADD PRIMARY KEY (recipient, purpose);

-- What may be enqueued per window. Tunable at any time (the next enqueue reads it).
CREATE TABLE sms_budgets (
    id           integer  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- What is counted: everything, recipients under a prefix, an operator, a template, a caller.
    scope        text     NOT NULL CHECK (scope IN ('all', 'prefix', 'operator', 'template', 'caller')),
    -- '*': each operator, template or caller counted apart; otherwise the one it applies to (a
    -- prefix such as '+88017', an operator name as sms_operator() gives it, a template name, a
    -- caller key).
    subject      text     NOT NULL DEFAULT '*',
    -- NULL: counted apart for each purpose; otherwise the only purpose it applies to.
    purpose      text,
    per          interval NOT NULL CHECK (per IN (interval '1 hour', interval '1 day')),
    max_messages integer  NOT NULL CHECK (max_messages >= 0),
    CHECK (scope <> 'all' OR subject = '*'),
    CHECK (scope <> 'prefix' OR subject ~ '^\+[0-9]+$'),
    UNIQUE NULLS NOT DISTINCT (scope, subject, purpose, per)
);

COMMENT ON TABLE sms_budgets IS
  'Enqueue budgets: at most max_messages codes per window (per) and purpose for everything, a '
  'destination prefix, an operator, a template or a caller key. Refused beyond with SR016 (SR015 '
  'for a caller). Every budget counts within one purpose, so a flood of one purpose never refuses '
  'another''s codes. Superusers may lift budgets for their session (SET sms.lift_budgets = on).';
COMMENT ON COLUMN sms_budgets.subject IS
  '"*": each operator, template or caller counted apart (for all: the only value); otherwise the '
  'prefix (+880…), operator name (as sms_operator() gives it), template or caller key it applies to.';
COMMENT ON COLUMN sms_budgets.purpose IS 'NULL: counted apart for each purpose; else only that purpose.';
COMMENT ON COLUMN sms_budgets.per IS 'The window: 1 hour or 1 day, aligned to UTC hours and days.';
COMMENT ON COLUMN sms_budgets.max_messages IS 'Codes that may be enqueued in one window; 0 stops them.';

-- Defaults for a Bangladesh OTP workload (a salon-booking product: hundreds to a few thousand
-- logins a day). A pumping attack on one operator gets at most 1,000 codes an hour; a single
-- caller (when the auth backend passes one) 20 an hour; everything of one purpose 3,000 an hour
-- and 20,000 a day.
INSERT INTO sms_budgets (scope, subject, per, max_messages) VALUES
    ('all',      '*', interval '1 hour', 3000),
    ('all',      '*', interval '1 day',  20000),
    ('operator', '*', interval '1 hour', 1000),
    ('caller',   '*', interval '1 hour', 20);

-- Counts per budget, purpose, subject and window. Each session counts in its own row, so two
-- transactions never wait for each other's count (a flood's open transaction holds only its own
-- rows); the total is the sum of the committed rows and this session's own.
CREATE TABLE sms_budget_usage (
    budget_id    integer     NOT NULL REFERENCES sms_budgets ON DELETE CASCADE,
    purpose      text        NOT NULL,
    -- '*', a prefix, an operator, a template, or the caller key's digest (never the key itself).
    subject      text        NOT NULL,
    window_start timestamptz NOT NULL,
    backend      integer     NOT NULL,
    used         integer     NOT NULL CHECK (used > 0),
    PRIMARY KEY (budget_id, purpose, subject, window_start, backend)
);

COMMENT ON TABLE sms_budget_usage IS
  'Codes enqueued per budget, purpose, subject and window, one row per database session; a '
  'caller key is kept only as a digest. Rows of past windows can be deleted.';

-- The digest a caller key is counted under (it may be an IP address: not kept as given).
CREATE FUNCTION sms_caller_digest(caller text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT left(encode(sha256(convert_to(caller, 'UTF8')), 'hex'), 32)
$$;

-- Counts one code against every budget that applies to it, and refuses it if one is spent.
CREATE FUNCTION sms_budget_spend(p_recipient text, p_purpose text, p_template text, p_caller text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b          sms_budgets;
    v_operator text := sms_operator(p_recipient);
    v_subject  text;
    win        timestamptz;
    total      bigint;
BEGIN
    IF current_setting('sms.lift_budgets', true) = 'on'
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        RETURN;
    END IF;
    FOR b IN SELECT * FROM sms_budgets WHERE purpose IS NULL OR purpose = p_purpose ORDER BY id LOOP
        v_subject := CASE b.scope
            WHEN 'all' THEN '*'
            WHEN 'prefix' THEN CASE WHEN starts_with(p_recipient, b.subject) THEN b.subject END
            WHEN 'operator' THEN CASE WHEN b.subject IN ('*', v_operator) THEN v_operator END
            WHEN 'template' THEN CASE WHEN b.subject IN ('*', p_template) THEN p_template END
            WHEN 'caller' THEN CASE WHEN p_caller IS NOT NULL AND b.subject IN ('*', p_caller)
                                    THEN sms_caller_digest(p_caller) END
        END;
        CONTINUE WHEN v_subject IS NULL;
        win := date_bin(b.per, now(), timestamptz '2000-01-01 00:00:00+00');
        INSERT INTO sms_budget_usage AS u (budget_id, purpose, subject, window_start, backend, used)
        VALUES (b.id, p_purpose, v_subject, win, pg_backend_pid(), 1)
        ON CONFLICT (budget_id, purpose, subject, window_start, backend) DO UPDATE SET used = u.used + 1;
        SELECT sum(u.used) INTO total FROM sms_budget_usage u
         WHERE u.budget_id = b.id AND u.purpose = p_purpose AND u.subject = v_subject AND u.window_start = win;
        IF total > b.max_messages THEN
            IF b.scope = 'caller' THEN
                RAISE EXCEPTION 'sms_outbox: the caller is over its limit (% per % for purpose "%")',
                                b.max_messages, b.per, p_purpose
                    USING ERRCODE = 'SR015', HINT = 'Tell the user to wait before asking for another code.';
            END IF;
            RAISE EXCEPTION 'sms_outbox: the % budget% is spent (% per % for purpose "%")',
                            b.scope, CASE WHEN b.scope IN ('all', 'caller') THEN '' ELSE format(' of %s', v_subject) END,
                            b.max_messages, b.per, p_purpose
                USING ERRCODE = 'SR016', HINT = 'Raise it in sms_budgets if this is not an attack.';
        END IF;
    END LOOP;
END $$;

COMMENT ON FUNCTION sms_budget_spend(text, text, text, text) IS
  'Counts one code against every sms_budgets row that applies to it (SR015/SR016 when one is spent). '
  'Called by the enqueue guard.';

-- The enqueue guard, now with the purpose set first, the per-recipient limit per purpose, and the
-- budgets. Everything else is as before.
CREATE OR REPLACE FUNCTION sms_outbox_guard() RETURNS trigger
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
    NEW.purpose := coalesce(NEW.purpose, NEW.template);

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
    IF NEW.state IS DISTINCT FROM 'pending' OR NEW.attempts IS DISTINCT FROM 0 OR NEW.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'sms_outbox: a new message must be pending with no attempts'
            USING ERRCODE = 'SR009';
    END IF;

    -- Fixed-window counter per recipient and purpose; the row lock serialises enqueues for that
    -- recipient and purpose only.
    SELECT * INTO cfg FROM sms_settings;
    INSERT INTO sms_recipient_budget AS b (recipient, purpose, window_start, used)
    VALUES (NEW.recipient, NEW.purpose, now(), 1)
    ON CONFLICT (recipient, purpose) DO UPDATE
        SET window_start = CASE WHEN b.window_start <= now() - cfg.recipient_window THEN now() ELSE b.window_start END,
            used = CASE WHEN b.window_start <= now() - cfg.recipient_window THEN 1 ELSE b.used + 1 END
    RETURNING used INTO recent;
    IF recent > cfg.recipient_limit THEN
        RAISE EXCEPTION 'sms_outbox: recipient is over the rate limit for purpose "%" (% per %)',
                        NEW.purpose, cfg.recipient_limit, cfg.recipient_window
            USING ERRCODE = 'SR008';
    END IF;

    PERFORM sms_budget_spend(NEW.recipient, NEW.purpose, NEW.template,
                             nullif(current_setting('sms.caller', true), ''));

    -- After the budget row lock: per recipient and purpose, seq follows commit order.
    NEW.seq := nextval('sms_outbox_seq');
    NEW.id := coalesce(NEW.id, sms_uuid_v7());
    NEW.supersede := coalesce(NEW.supersede, true);
    NEW.created_at := now();
    NEW.next_attempt_at := least(greatest(coalesce(NEW.next_attempt_at, now()), now()), NEW.expires_at);
    NEW.superseded_by := NULL;
    RETURN NEW;
END $$;

-- sms_enqueue() gains the caller key. It reaches the guard as a transaction-local setting
-- (sms.caller), which a plain INSERT can set too (SET LOCAL sms.caller = '…'); it is never stored.
DROP FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean);
CREATE FUNCTION sms_enqueue(
    recipient       text,
    template        text,
    params          jsonb       DEFAULT '{}',
    expires_at      timestamptz DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    priority        integer     DEFAULT 5,
    locale          text        DEFAULT 'en',
    purpose         text        DEFAULT NULL,
    supersede       boolean     DEFAULT true,
    caller          text        DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
    outer_caller text := current_setting('sms.caller', true);
BEGIN
    IF sms_enqueue.idempotency_key IS NOT NULL THEN
        SELECT o.id INTO new_id FROM sms_outbox o WHERE o.idempotency_key = sms_enqueue.idempotency_key;
        IF FOUND THEN
            RETURN new_id;
        END IF;
    END IF;

    PERFORM set_config('sms.caller', coalesce(sms_enqueue.caller, outer_caller, ''), true);
    INSERT INTO sms_outbox (recipient, template, params, expires_at, idempotency_key, priority, locale,
                            purpose, supersede)
    VALUES (sms_enqueue.recipient, sms_enqueue.template, sms_enqueue.params, sms_enqueue.expires_at,
            sms_enqueue.idempotency_key, sms_enqueue.priority, sms_enqueue.locale, sms_enqueue.purpose,
            coalesce(sms_enqueue.supersede, true))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;
    PERFORM set_config('sms.caller', coalesce(outer_caller, ''), true);

    IF new_id IS NULL THEN
        -- A concurrent transaction committed the same key first.
        SELECT o.id INTO new_id FROM sms_outbox o WHERE o.idempotency_key = sms_enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END $$;

COMMENT ON FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) IS
    'Enqueue one SMS inside the caller''s transaction; returns the message id. caller: an optional '
    'key (client IP, account, device) counted against the caller budget, never stored. See README '
    '"SQL interface".';

-- As before: the enqueue functions run as their owner with the search path pinned, and
-- sms_enqueue() is not open to every role.
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['sms_outbox_guard()',
                              'sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp', fn, current_schema());
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) FROM PUBLIC;

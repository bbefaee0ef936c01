-- Budgets in money as well as in messages, numbers that can never reach a subscriber for demos
-- and load tests, and refusal counts that expire with the reports.
--
-- A money budget counts each code at the most it may cost before anything is spent: its
-- template's max_parts times the destination's price per part (sms_price_estimates, the longest
-- matching prefix in the budget's currency). A code whose destination has no price in that
-- currency cannot be counted and is refused (SR016), so no spend goes unbudgeted.
--
-- New refusal: SR018 a fictional number outside a session that asked for them.

CREATE TABLE sms_price_estimates (
    -- A destination prefix such as '+880' or '+88017'; the longest one matching a number applies.
    prefix   text          NOT NULL CHECK (prefix ~ '^\+[0-9]{1,15}$'),
    currency char(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    per_part numeric(14,6) NOT NULL CHECK (per_part >= 0),
    PRIMARY KEY (prefix, currency)
);

COMMENT ON TABLE sms_price_estimates IS
  'What one SMS part to a destination prefix is expected to cost, per currency, for the money '
  'budgets (sms_budgets.max_cost). The longest matching prefix applies. Tunable at any time.';

-- Bangladesh through a local aggregator: about 0.25 to 0.35 BDT a part; counted high.
INSERT INTO sms_price_estimates (prefix, currency, per_part) VALUES ('+880', 'BDT', 0.35);

ALTER TABLE sms_budgets
    ALTER COLUMN max_messages DROP NOT NULL,
    ADD COLUMN max_cost numeric(14,2) CHECK (max_cost >= 0),
    ADD COLUMN currency char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT sms_budgets_has_a_limit CHECK (max_messages IS NOT NULL OR max_cost IS NOT NULL),
    ADD CONSTRAINT sms_budgets_cost_has_currency CHECK ((max_cost IS NULL) = (currency IS NULL));

COMMENT ON COLUMN sms_budgets.max_messages IS
  'Codes that may be enqueued in one window; 0 stops them; NULL: no limit in messages.';
COMMENT ON COLUMN sms_budgets.max_cost IS
  'Most the codes enqueued in one window may cost, in currency, each counted at its template''s '
  'max_parts times its destination''s sms_price_estimates price; NULL: no limit in money.';
COMMENT ON COLUMN sms_budgets.currency IS 'ISO 4217 currency of max_cost.';

-- Every purpose's codes may cost at most 15,000 BDT a day (at the estimate: 0.70 BDT a code of
-- two parts, about 21,000 codes, just above the 20,000 a day the messages budget allows).
UPDATE sms_budgets SET max_cost = 15000, currency = 'BDT'
 WHERE scope = 'all' AND per = interval '1 day' AND purpose IS NULL;

ALTER TABLE sms_budget_usage ADD COLUMN spent numeric(16,6) NOT NULL DEFAULT 0 CHECK (spent >= 0);
COMMENT ON COLUMN sms_budget_usage.spent IS 'The estimated cost of those codes, in the budget''s currency.';

-- The most one code of p_template to p_recipient may cost, in p_currency; NULL without a price.
CREATE FUNCTION sms_cost_estimate(p_recipient text, p_template text, p_currency text) RETURNS numeric
LANGUAGE sql STABLE AS $$
  SELECT (SELECT max(t.max_parts) FROM sms_templates t WHERE t.name = p_template) * e.per_part
    FROM sms_price_estimates e
   WHERE e.currency = p_currency AND starts_with(p_recipient, e.prefix)
   ORDER BY length(e.prefix) DESC
   LIMIT 1
$$;

COMMENT ON FUNCTION sms_cost_estimate(text, text, text) IS
  'The most one code of a template to a number may cost in a currency: the template''s max_parts '
  'times the longest matching sms_price_estimates prefix''s price; NULL when none is known.';

-- Counts one code against every budget that applies to it, in messages and in money, and refuses
-- it if one is spent.
CREATE OR REPLACE FUNCTION sms_budget_spend(p_recipient text, p_purpose text, p_template text, p_caller text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b          sms_budgets;
    v_operator text := sms_operator(p_recipient);
    v_subject  text;
    v_cost     numeric;
    win        timestamptz;
    total      bigint;
    spent      numeric;
    what       text;
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
        what := concat_ws(' of ', b.scope || ' budget',
                          CASE WHEN b.scope NOT IN ('all', 'caller') THEN v_subject END);
        v_cost := 0;
        IF b.max_cost IS NOT NULL THEN
            v_cost := sms_cost_estimate(p_recipient, p_template, b.currency);
            IF v_cost IS NULL THEN
                RAISE EXCEPTION 'sms_outbox: the % counts money, and no price in % is known for this destination',
                                what, b.currency
                    USING ERRCODE = 'SR016', HINT = 'Add the destination''s prefix to sms_price_estimates.';
            END IF;
        END IF;
        win := date_bin(b.per, now(), timestamptz '2000-01-01 00:00:00+00');
        INSERT INTO sms_budget_usage AS u (budget_id, purpose, subject, window_start, backend, used, spent)
        VALUES (b.id, p_purpose, v_subject, win, pg_backend_pid(), 1, v_cost)
        ON CONFLICT (budget_id, purpose, subject, window_start, backend)
            DO UPDATE SET used = u.used + 1, spent = u.spent + excluded.spent;
        SELECT sum(u.used), sum(u.spent) INTO total, spent FROM sms_budget_usage u
         WHERE u.budget_id = b.id AND u.purpose = p_purpose AND u.subject = v_subject AND u.window_start = win;
        IF total > b.max_messages OR spent > b.max_cost THEN
            IF b.scope = 'caller' THEN
                RAISE EXCEPTION 'sms_outbox: the caller is over its limit (% per % for purpose "%")',
                                concat_ws(' and ', b.max_messages || ' codes', b.max_cost || ' ' || b.currency),
                                b.per, p_purpose
                    USING ERRCODE = 'SR015', HINT = 'Tell the user to wait before asking for another code.';
            END IF;
            RAISE EXCEPTION 'sms_outbox: the % is spent (% per % for purpose "%")', what,
                            concat_ws(' and ', b.max_messages || ' codes', b.max_cost || ' ' || b.currency),
                            b.per, p_purpose
                USING ERRCODE = 'SR016', HINT = 'Raise it in sms_budgets if this is not an attack.';
        END IF;
    END LOOP;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_budget_spend(text, text, text, text) SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- Numbers that can never reach a subscriber: a Bangladeshi mobile prefix (+8801 and 3 to 9)
-- followed by nine digits, one more than any number in the national plan has. They count as
-- country BD, operator 'other BD' (sms_operator() knows only numbers of the plan's length).
CREATE FUNCTION sms_fictional(recipient text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT recipient ~ '^\+8801[3-9][0-9]{9}$'
$$;

COMMENT ON FUNCTION sms_fictional(text) IS
  'Whether a number is one of the fictional ones demo and bench use (+8801[3-9] and nine digits: '
  'one digit longer than any Bangladeshi number). Refused (SR018) unless the session sets '
  'sms.fictional = on; the relay hands them to the simulator only.';

CREATE FUNCTION sms_outbox_guard_fictional() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF sms_fictional(NEW.recipient) AND current_setting('sms.fictional', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'sms_outbox: recipient is a fictional number (one digit too long for Bangladesh)'
            USING ERRCODE = 'SR018', HINT = 'Only demo and bench use these; check the number.';
    END IF;
    RETURN NEW;
END $$;

-- Runs after sms_outbox_guard (alphabetical order), which has checked the number is E.164.
CREATE TRIGGER sms_outbox_guard_fictional BEFORE INSERT ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION sms_outbox_guard_fictional();

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_outbox_guard_fictional() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- Refusal counts are report data: they expire with the provider calls (the relay passes that
-- age), at most p_batch rows a call like the other retention statements.
CREATE FUNCTION sms_maintain_expire_refusals(p_age interval, p_batch integer) RETURNS bigint
LANGUAGE sql AS $$
  WITH gone AS (
      DELETE FROM sms_refusals WHERE (day, purpose, sqlstate, backend) IN (
          SELECT day, purpose, sqlstate, backend FROM sms_refusals
           WHERE day < ((now() - p_age) AT TIME ZONE 'UTC')::date
           LIMIT p_batch)
      RETURNING 1
  )
  SELECT count(*) FROM gone
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_maintain_expire_refusals(interval, integer) SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

CREATE OR REPLACE VIEW sms_report_refusals AS
SELECT day,
       purpose,
       sqlstate,
       CASE sqlstate
            WHEN 'SR001' THEN 'not an E.164 number'
            WHEN 'SR007' THEN 'destination not allowed'
            WHEN 'SR008' THEN 'recipient over its limit'
            WHEN 'SR015' THEN 'caller over its limit'
            WHEN 'SR016' THEN 'budget spent'
            WHEN 'SR017' THEN 'params of the wrong shape'
            WHEN 'SR018' THEN 'fictional number'
            ELSE 'other refusal'
       END AS reason,
       sum(refused) AS refused
  FROM sms_refusals
 GROUP BY day, purpose, sqlstate;

-- Prune also removes the record of maintenance runs after a week (the rematch job alone records
-- a run every ten seconds).
CREATE OR REPLACE FUNCTION sms_maintain_prune() RETURNS bigint
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
), runs AS (
    DELETE FROM sms_maintenance_runs WHERE started_at < now() - interval '7 days'
    RETURNING 1
)
SELECT (SELECT count(*) FROM usage) + (SELECT count(*) FROM recipients) + (SELECT count(*) FROM circuits)
     + (SELECT count(*) FROM runs)
$$;

COMMENT ON TABLE sms_maintenance_runs IS
  'One row per maintenance run: job (prune, scrub, retention, rematch), the slot it ran for, the '
  'relay that took it, when it started and finished, the rows it changed, and its error if it '
  'failed. Kept for a week.';

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_maintain_prune() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- Receipts of one kind (p_source) stored unmatched within p_within (most came before their
-- attempt was recorded), matched again against the attempts of p_providers; returns how many
-- matched now. Owner-run like the other jobs: the operator's role reads no receipts. Whoever
-- calls it, a receipt queues at most 5 resends (the most receipts.max_resends allows).
CREATE FUNCTION sms_maintain_rematch(p_source text, p_providers text[], p_within interval,
                                     p_max_resends integer, p_expiry_margin interval)
RETURNS bigint
LANGUAGE sql AS $$
SELECT count(*) FILTER (WHERE m.result IN ('applied', 'stale'))
  FROM (SELECT id FROM sms_receipts
         WHERE result = 'unmatched' AND source = p_source AND received_at > now() - p_within
         ORDER BY provider_message_id, id) r,
       LATERAL sms_apply_receipt(r.id, p_providers, least(p_max_resends, 5), p_expiry_margin) m
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_maintain_rematch(text, text[], interval, integer, interval) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END $$;

-- Refused enqueues an analyst can count. A refusal raised by sms_enqueue() aborts the caller's
-- statement, so nothing of it stays in the database; sms_try_enqueue() takes the same arguments,
-- turns a refusal (SQLSTATE class SR) into a returned code, and counts it per day, purpose and
-- SQLSTATE, so an attack's refused codes show in sms_report_refusals.

-- One row per day, purpose, SQLSTATE and session, so that counting never makes two enqueues wait
-- for each other.
CREATE TABLE sms_refusals (
    day      date    NOT NULL,
    purpose  text    NOT NULL,
    sqlstate text    NOT NULL,
    backend  integer NOT NULL,
    refused  integer NOT NULL CHECK (refused > 0),
    PRIMARY KEY (day, purpose, sqlstate, backend)
);

COMMENT ON TABLE sms_refusals IS
  'Enqueues refused through sms_try_enqueue(), per UTC day, purpose, SQLSTATE and database session. '
  'Holds no number or code. Read it through sms_report_refusals.';

CREATE FUNCTION sms_try_enqueue(
    recipient       text,
    template        text,
    params          jsonb       DEFAULT '{}',
    expires_at      timestamptz DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    priority        integer     DEFAULT 5,
    locale          text        DEFAULT 'en',
    purpose         text        DEFAULT NULL,
    supersede       boolean     DEFAULT true,
    caller          text        DEFAULT NULL,
    OUT id          uuid,
    OUT refused     text
)
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        id := sms_enqueue(recipient, template, params, expires_at, idempotency_key, priority, locale,
                          purpose, supersede, caller);
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE NOT LIKE 'SR%' THEN
            RAISE;
        END IF;
        refused := SQLSTATE;
        INSERT INTO sms_refusals AS r (day, purpose, sqlstate, backend, refused)
        VALUES ((now() AT TIME ZONE 'UTC')::date, coalesce(sms_try_enqueue.purpose, template), SQLSTATE,
                pg_backend_pid(), 1)
        ON CONFLICT ON CONSTRAINT sms_refusals_pkey DO UPDATE SET refused = r.refused + 1;
    END;
END $$;

COMMENT ON FUNCTION sms_try_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) IS
  'sms_enqueue() that returns a refusal instead of raising it: (id, NULL) when enqueued, (NULL, '
  'SQLSTATE) when refused, the refusal counted in sms_refusals. Other errors are raised as usual.';

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_try_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION sms_try_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) FROM PUBLIC;

CREATE VIEW sms_report_refusals AS
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
            ELSE 'other refusal'
       END AS reason,
       sum(refused) AS refused
  FROM sms_refusals
 GROUP BY day, purpose, sqlstate;

COMMENT ON VIEW sms_report_refusals IS
  'Enqueues refused through sms_try_enqueue(), per UTC day, purpose and SQLSTATE, with the reason.';
COMMENT ON COLUMN sms_report_refusals.day IS 'UTC day of the refusal.';
COMMENT ON COLUMN sms_report_refusals.purpose IS 'The purpose the code was asked for.';
COMMENT ON COLUMN sms_report_refusals.sqlstate IS 'The refusal''s SQLSTATE (class SR).';
COMMENT ON COLUMN sms_report_refusals.reason IS 'What the SQLSTATE stands for.';
COMMENT ON COLUMN sms_report_refusals.refused IS 'Refused enqueues.';

-- Least-privilege group roles for sms-relay. Run it as the owner of the sms-relay objects (the role
-- that ran `sms-relay migrate`) or a superuser, in the sms-relay database, after every
-- `sms-relay migrate` (new tables and views get no privileges until it runs again):
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
--
-- It is idempotent and declarative: each run revokes what the four roles hold on sms-relay's
-- objects (named sms_*, and _sqlx_migrations) and grants exactly what is listed below, in one
-- transaction. Roles are cluster-wide and
-- are created only if missing (a concurrent run creating them too is tolerated); privileges are
-- per database, so run it in every database that holds sms-relay.
--
--   sms_auth          the auth backend: may only enqueue (sms_enqueue() or a plain INSERT into
--                     sms_outbox without RETURNING). It cannot read anything.
--   sms_relay_worker  `sms-relay run`: reads and writes the queue, attempts, receipts and its
--                     bookkeeping tables; runs the maintenance jobs (as owner-run functions).
--   sms_operator      the operator commands (status, report, maintain, messages, templates): the
--                     queue's counts and times, messages with masked numbers (sms_messages),
--                     attempts, receipts without payloads, circuits, reports, retry and cancel of
--                     one message, and the maintenance jobs, but never a phone number or a code
--                     (no SELECT on sms_outbox.recipient or .params).
--   sms_analyst       reads the sms_report_* views and sms_attempts, which hold no phone numbers.
--                     Nothing on sms_outbox, sms_receipts or sms_recipient_budget.
--
-- The roles are NOLOGIN groups. Give each application or person its own login role in a group:
--
--     CREATE ROLE auth_backend LOGIN PASSWORD '…' IN ROLE sms_auth;
--     CREATE ROLE relay        LOGIN PASSWORD '…' IN ROLE sms_relay_worker;
--     CREATE ROLE alice        LOGIN PASSWORD '…' IN ROLE sms_analyst;
--     CREATE ROLE oncall       LOGIN PASSWORD '…' IN ROLE sms_operator;
--
-- (or `GRANT sms_analyst TO alice;` for an existing role). Login roles inherit the group's
-- privileges (INHERIT is the default). Keep these notes in mind:
--
-- - `sms-relay migrate` needs the objects' owner; the roles above cannot migrate.
-- - sms_enqueue() and the sms_outbox triggers are SECURITY DEFINER (migration ..._reports.sql):
--   they run as the owner, which is why sms_auth needs no privilege on the tables they read.
--   Let a dedicated non-superuser role own the schema rather than a superuser.
-- - The relay's periodic `VACUUM sms_queue` (relay.vacuum_every) needs the table's owner; as
--   sms_relay_worker PostgreSQL skips it with a warning and autovacuum does the work. Set
--   relay.vacuum_every = 0 to silence the warning.
-- - A plain INSERT with `RETURNING id` needs SELECT on sms_outbox; sms_auth has none, so use
--   sms_enqueue(), which returns the id.

BEGIN;

-- Roles -----------------------------------------------------------------------------------------

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('sms_auth', 'sms-relay: enqueue only (sms_enqueue, INSERT into sms_outbox); reads nothing.'),
        ('sms_relay_worker', 'sms-relay: the relay process (sms-relay run).'),
        ('sms_operator', 'sms-relay: status, report, maintain, messages and templates; never a phone number or a code.'),
        ('sms_analyst', 'sms-relay: SELECT on the sms_report_* views and sms_attempts; no phone numbers.'))
        AS v(name, note)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r.name);
                EXECUTE format('COMMENT ON ROLE %I IS %L', r.name, r.note);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another session created it between our check and our CREATE.
                NULL;
            END;
        END IF;
    END LOOP;
END $$;

-- Start from nothing on sms-relay's objects (those named sms_*, and sqlx's migration history), so
-- a run also takes back what an earlier version of this file granted. Other objects in the schema
-- (say, the auth backend's own tables) are left alone. Functions lose PUBLIC's default EXECUTE:
-- each role gets the ones it needs below. (Triggers fire whatever the caller may execute; views
-- check EXECUTE on the functions they call against the reader, hence sms_report_* for analysts.)
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT c.oid::regclass AS name, c.relkind
                 FROM pg_class c
                WHERE c.relnamespace = current_schema()::regnamespace
                  AND (c.relname LIKE 'sms\_%' OR c.relname = '_sqlx_migrations')
                  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM sms_auth, sms_relay_worker, sms_analyst, sms_operator',
                       CASE obj.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, obj.name);
    END LOOP;
    FOR obj IN SELECT p.oid::regprocedure AS name
                 FROM pg_proc p
                WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE 'sms\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, sms_auth, sms_relay_worker, sms_analyst, sms_operator', obj.name);
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO sms_auth, sms_relay_worker, sms_analyst, sms_operator', current_schema());
    -- PostgreSQL 15's default; databases upgraded from 14 still let PUBLIC create objects.
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
END $$;

-- sms_auth --------------------------------------------------------------------------------------

GRANT EXECUTE ON FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) TO sms_auth;
GRANT EXECUTE ON FUNCTION sms_try_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean, text) TO sms_auth;
-- sms_outbox.id's default, evaluated with the inserter's rights.
GRANT EXECUTE ON FUNCTION sms_uuid_v7() TO sms_auth;
-- The columns sms_enqueue() takes; the guard trigger fills and checks the rest. No SELECT, so no
-- RETURNING and no reading of other messages.
GRANT INSERT (recipient, template, params, expires_at, idempotency_key, priority, locale, purpose, supersede)
    ON sms_outbox TO sms_auth;

-- sms_relay_worker ------------------------------------------------------------------------------

-- Claim, complete, resend, status (src/store, src/receipts).
GRANT SELECT, UPDATE ON sms_outbox TO sms_relay_worker;
-- Attempt rows, receipts and the delivery status receipts set on attempts.
GRANT SELECT, INSERT, UPDATE ON sms_attempts, sms_receipts TO sms_relay_worker;
-- Circuit-breaker snapshots and idle registrations (LISTEN needs no privilege).
GRANT SELECT, INSERT, UPDATE, DELETE ON sms_provider_circuits, sms_relay_sleepers TO sms_relay_worker;
-- Template bodies for rendering; country prefixes for sms_country() on attempt rows; the migration
-- history for the "is the schema up to date" check every command makes.
GRANT SELECT ON sms_templates, sms_country_prefixes, sms_holds, sms_queue, _sqlx_migrations TO sms_relay_worker;
-- The record of maintenance runs (the jobs themselves are owner-run sms_maintain_* functions).
GRANT SELECT, INSERT, UPDATE ON sms_maintenance_runs TO sms_relay_worker;
-- The budgets and their use in the current window, for /metrics (caller keys only as digests);
-- the messages with masked numbers, for the operator page.
GRANT SELECT ON sms_budgets, sms_budget_usage, sms_messages TO sms_relay_worker;

-- sms_operator ----------------------------------------------------------------------------------

-- The queue without its numbers and codes: every column of sms_outbox but recipient and params.
DO $$
DECLARE
    cols text;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
      FROM pg_attribute
     WHERE attrelid = 'sms_outbox'::regclass AND attnum > 0 AND NOT attisdropped
       AND attname NOT IN ('recipient', 'params');
    EXECUTE format('GRANT SELECT (%s) ON sms_outbox TO sms_operator', cols);
END $$;
GRANT SELECT ON sms_attempts, sms_provider_circuits, sms_maintenance_runs, sms_holds, sms_queue, _sqlx_migrations TO sms_operator;
GRANT INSERT, UPDATE ON sms_maintenance_runs TO sms_operator;
-- `messages` and `templates preview`: messages with masked numbers and no codes, receipts without
-- their payloads, the templates (no secrets in them).
GRANT SELECT ON sms_messages, sms_message_receipts, sms_templates TO sms_operator;

-- sms_analyst -----------------------------------------------------------------------------------

GRANT SELECT ON sms_attempts, _sqlx_migrations TO sms_analyst;

-- Views and functions, found by name so that ones added by later migrations are included (run this
-- file again after them): every sms_report_* view for analysts and the relay (`sms-relay report`);
-- the sms_report_* helpers those views call for analysts; every sms_* function but the enqueue ones
-- for the relay (sms_record_receipt(), sms_resend(), sms_country(), sms_operator(), …).
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT c.oid::regclass AS name
                 FROM pg_class c
                WHERE c.relnamespace = current_schema()::regnamespace
                  AND c.relname LIKE 'sms\_report\_%' AND c.relkind IN ('v', 'm')
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO sms_analyst, sms_relay_worker, sms_operator', obj.name);
    END LOOP;
    FOR obj IN SELECT p.oid::regprocedure AS name, p.proname
                 FROM pg_proc p
                WHERE p.pronamespace = current_schema()::regnamespace
                  AND p.proname LIKE 'sms\_%' AND p.proname NOT IN ('sms_enqueue', 'sms_try_enqueue')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO sms_relay_worker', obj.name);
        IF obj.proname LIKE 'sms\_report\_%' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO sms_analyst, sms_operator', obj.name);
        END IF;
        IF obj.proname LIKE 'sms\_maintain\_%'
           OR obj.proname IN ('sms_retry', 'sms_cancel', 'sms_mask', 'sms_operator', 'sms_uuid_v7_floor',
                              'sms_hold_group_size') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO sms_operator', obj.name);
        END IF;
    END LOOP;
END $$;

COMMIT;

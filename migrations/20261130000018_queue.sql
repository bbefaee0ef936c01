-- The waiting messages get a narrow table of their own, so that recording a round rewrites the
-- wide message row in place.
--
-- Until now the claim walked partial indexes of sms_outbox (`WHERE state = 'pending'`). Because
-- `state` sits in those indexes' predicates, every state change was a non-HOT update: each new row
-- version went into every index of the table (the primary key and the recipient index too), and a
-- message's outcome cost more index work than its attempt row. Now `sms_queue` holds one narrow
-- row per waiting message, kept by a trigger in the same statement as the change to sms_outbox; no
-- index of sms_outbox covers a column a round changes, and the table leaves room on each page for
-- the new versions, so recording an outcome adds no index entry to sms_outbox at all.
--
-- sms_outbox.state stays the truth; sms_queue is derived from it, like an index, and is never
-- written by anything but the trigger below.

CREATE TABLE sms_queue (
    seq             bigint      PRIMARY KEY,
    id              uuid        NOT NULL,
    priority        smallint    NOT NULL,
    expires_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL
) WITH (
    -- Every sent message deletes its row: vacuum after a few thousand instead of 20% of the table.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE sms_queue IS
    'The waiting messages (sms_outbox rows in state pending), one narrow row each, kept by a trigger on sms_outbox: what the relay''s claim walks. Read sms_outbox for anything else.';

-- The claim's order, due time checked inside the index.
CREATE INDEX sms_queue_claim_idx ON sms_queue (priority, expires_at, next_attempt_at);
-- When the next message comes due (the relay sleeps until then), and the queue gauges.
CREATE INDEX sms_queue_due_idx ON sms_queue (next_attempt_at);

-- No message may change between the fill and the triggers below (the lock lasts until the
-- migration commits); enqueues wait that long.
LOCK TABLE sms_outbox IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO sms_queue (seq, id, priority, expires_at, next_attempt_at)
SELECT seq, id, priority, expires_at, next_attempt_at FROM sms_outbox WHERE state = 'pending';

-- Keeps sms_queue equal to the waiting messages of sms_outbox, once per statement over the rows it
-- changed: whatever changes a message through SQL (a relay's round, superseding, an operator, a
-- receipt, a plain UPDATE by hand, a TRUNCATE) keeps the queue right. Only what skips triggers
-- (`session_replication_role = replica`, a disabled trigger) can leave it behind. Every statement
-- reaches sms_queue through its primary key or the messages' ids, whatever plan is cached.
CREATE FUNCTION sms_queue_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- The rows as they are now: a later row of the same statement may have superseded one.
        -- One primary-key lookup per row (the plan is cached per session, and a plan made while
        -- the table was empty would otherwise scan it whole for good).
        INSERT INTO sms_queue (seq, id, priority, expires_at, next_attempt_at)
        SELECT o.seq, o.id, o.priority, o.expires_at, o.next_attempt_at
          FROM sms_new_rows n
         CROSS JOIN LATERAL (SELECT * FROM sms_outbox x WHERE x.id = n.id OFFSET 0) o
         WHERE o.state = 'pending';
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM sms_queue q
         WHERE q.seq = ANY (ARRAY(SELECT n.seq FROM sms_new_rows n WHERE n.state <> 'pending'));
        INSERT INTO sms_queue AS q (seq, id, priority, expires_at, next_attempt_at)
        SELECT n.seq, n.id, n.priority, n.expires_at, n.next_attempt_at
          FROM sms_new_rows n WHERE n.state = 'pending'
        ON CONFLICT (seq) DO UPDATE
           SET priority = excluded.priority, expires_at = excluded.expires_at,
               next_attempt_at = excluded.next_attempt_at
         WHERE (q.priority, q.expires_at, q.next_attempt_at)
               IS DISTINCT FROM (excluded.priority, excluded.expires_at, excluded.next_attempt_at);
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM sms_queue q WHERE q.seq = ANY (ARRAY(SELECT o.seq FROM sms_old_rows o));
    ELSE
        TRUNCATE sms_queue;
    END IF;
    RETURN NULL;
END $$;
DO $$
BEGIN
    -- Runs as the schema's owner: whoever may change sms_outbox keeps its queue right, and
    -- nobody needs rights on sms_queue to do so.
    EXECUTE format('ALTER FUNCTION sms_queue_sync() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

CREATE TRIGGER sms_queue_insert AFTER INSERT ON sms_outbox
    REFERENCING NEW TABLE AS sms_new_rows FOR EACH STATEMENT EXECUTE FUNCTION sms_queue_sync();
CREATE TRIGGER sms_queue_update AFTER UPDATE ON sms_outbox
    REFERENCING OLD TABLE AS sms_old_rows NEW TABLE AS sms_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sms_queue_sync();
CREATE TRIGGER sms_queue_delete AFTER DELETE ON sms_outbox
    REFERENCING OLD TABLE AS sms_old_rows FOR EACH STATEMENT EXECUTE FUNCTION sms_queue_sync();
CREATE TRIGGER sms_queue_truncate AFTER TRUNCATE ON sms_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sms_queue_sync();

-- Relays and operators read the queue (sql/roles.sql grants the same when run again): granted here
-- too where those roles exist, so relays keep claiming right after this migration.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_relay_worker') THEN
        GRANT SELECT ON sms_queue TO sms_relay_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_operator') THEN
        GRANT SELECT ON sms_queue TO sms_operator;
    END IF;
END $$;

-- No index of sms_outbox may cover a column a round changes, or its updates are not HOT. The
-- recipient index answers superseding's lookup of a recipient's waiting messages (a recipient's
-- messages are few: the enqueue budgets see to that).
DROP INDEX sms_outbox_claim_idx, sms_outbox_due_idx, sms_outbox_waiting_recipient_idx;

-- Room on each page for the next version of every row on it: the messages a claim takes were
-- mostly enqueued together, sit on the same pages and are recorded in one statement, so their
-- old versions cannot be pruned before the new ones are written. Pages written before this
-- migration keep their old fill.
ALTER TABLE sms_outbox SET (fillfactor = 50);

-- The claim walks the queue instead of sms_outbox's partial index; everything else is as before.
CREATE OR REPLACE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
RETURNS TABLE (id uuid, seq bigint, recipient text, template text, locale text, params text,
               body text, max_parts smallint, round integer, superseded boolean,
               remaining_ms double precision, resend_reason text, resend_skip text,
               holder integer, holder_since timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c     record;
    ids   uuid[] := '{}';
    seqs  bigint[] := '{}';
    n     integer := 0;
    live  uuid[];
    since timestamptz;
    mine  jsonb;
BEGIN
    PERFORM sms_unhold(d) FROM unnest(p_done) AS d;
    -- A set with logarithmic lookups.
    mine := CASE WHEN cardinality(p_sending) > 0
                 THEN (SELECT jsonb_object_agg(h, true) FROM unnest(p_sending) AS h) ELSE '{}' END;
    IF p_limit > 0 THEN
        -- The LIMIT makes the planner walk the claim index in order instead of sorting every
        -- waiting message (a loop's query is otherwise planned for reading all its rows); no
        -- more messages can be held than the lock table has room for.
        FOR c IN SELECT q.id, q.seq FROM sms_queue q
                  WHERE q.next_attempt_at <= now()
                  ORDER BY q.priority, q.expires_at
                  LIMIT p_limit + current_setting('max_locks_per_transaction')::integer
                        * (current_setting('max_connections')::integer
                           + current_setting('max_prepared_transactions')::integer)
        LOOP
            CONTINUE WHEN mine ? c.seq::text;
            IF sms_hold(c.seq) THEN
                n := n + 1;
                ids[n] := c.id;
                seqs[n] := c.seq;
                EXIT WHEN n >= p_limit;
            END IF;
        END LOOP;
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Read again with a fresh snapshot: a message another relay finished after the walk began
    -- can be held once that relay let go, and is let go again here.
    live := ARRAY(SELECT o.id FROM sms_outbox o
                   WHERE o.id = ANY (ids) AND o.state = 'pending' AND o.next_attempt_at <= now());
    IF cardinality(live) < n THEN
        PERFORM sms_unhold(h.seq) FROM unnest(ids, seqs) AS h(id, seq) WHERE h.id <> ALL (live);
    END IF;
    -- This session's start, read once per session.
    since := nullif(current_setting('sms.holder_since', true), '')::timestamptz;
    IF since IS NULL THEN
        SELECT a.backend_start INTO since FROM pg_stat_activity a WHERE a.pid = pg_backend_pid();
        PERFORM set_config('sms.holder_since', since::text, false);
    END IF;
    RETURN QUERY
        SELECT o.id, o.seq, o.recipient, o.template, o.locale, o.params::text, t.body, t.max_parts,
               o.attempts + 1, o.superseded_by IS NOT NULL,
               (extract(epoch FROM o.expires_at - now()) * 1000)::float8,
               o.resend_reason, o.resend_skip, pg_backend_pid(), since
          FROM sms_outbox o
          LEFT JOIN sms_templates t ON t.name = o.template AND t.locale = o.locale
         WHERE o.id = ANY (live)
         ORDER BY o.priority, o.expires_at;
END $$;

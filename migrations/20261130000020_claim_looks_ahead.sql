-- The claim says when the next message comes due, and plans its statements once per session.
--
-- A relay that took fewer messages than it asked for sleeps until the next waiting message comes
-- due. It used to ask for that time in a second statement after every such claim: one more round
-- trip each time a code arrived, during which the next code to arrive waited. Now the claim answers
-- it in the same call, with one last row.
--
-- The claim's statements take the limit and the held ids as parameters. PostgreSQL planned them
-- again on every call (a custom plan each time), which cost more than running them for a batch of a
-- few messages; their plans do not depend on those values, so one generic plan per session serves.

DROP FUNCTION sms_claim(integer, bigint[], bigint[]);

-- The walk, the fresh re-read and the holds are as before. When the walk ran out of due messages
-- before p_limit, the last row has every column NULL but next_due_ms: the milliseconds until the
-- earliest waiting message no relay holds comes due (NULL when none waits). When the claim took
-- p_limit, there is no such row: more may be due now.
CREATE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
RETURNS TABLE (id uuid, seq bigint, recipient text, template text, locale text, params text,
               body text, max_parts smallint, round integer, superseded boolean,
               remaining_ms double precision, resend_reason text, resend_skip text,
               holder integer, holder_since timestamptz, next_due_ms double precision)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
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
        -- waiting message; no more messages can be held than the lock table has room for.
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
    IF n > 0 THEN
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
                   o.resend_reason, o.resend_skip, pg_backend_pid(), since, NULL::float8
              FROM sms_outbox o
              LEFT JOIN sms_templates t ON t.name = o.template AND t.locale = o.locale
             WHERE o.id = ANY (live)
             ORDER BY o.priority, o.expires_at;
    END IF;
    IF n < p_limit THEN
        -- Every due message no relay holds is held now; what waits is due later than now(). The
        -- output columns are unset here, so the row is NULL but for next_due_ms.
        next_due_ms := (SELECT (extract(epoch FROM q.next_attempt_at - now()) * 1000)::float8
                          FROM sms_queue q
                         WHERE q.next_attempt_at > now() AND sms_free(q.seq)
                         ORDER BY q.next_attempt_at
                         LIMIT 1);
        RETURN NEXT;
    END IF;
END $$;
COMMENT ON FUNCTION sms_claim(integer, bigint[], bigint[]) IS
    'The relay''s claim: holds up to p_limit due messages for this session, other than the p_sending it holds already (after giving back the holds in p_done), and returns them; below p_limit, a last row with only next_due_ms set says when the next waiting message comes due.';

-- A new function may be run by anyone until the roles script takes that away; take it away here
-- if that script has run, and give it back to the relay's role.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_relay_worker') THEN
        REVOKE ALL ON FUNCTION sms_claim(integer, bigint[], bigint[]) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION sms_claim(integer, bigint[], bigint[]) TO sms_relay_worker;
    END IF;
END $$;

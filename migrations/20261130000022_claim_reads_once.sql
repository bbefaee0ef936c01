-- The claim reads each held message once, and skips the relay's own messages without building a
-- set on every call.
--
-- It read the held rows twice (once to see which were still waiting, once to return them) and
-- turned the list of messages the relay is sending into a JSON object on every call; together
-- about a quarter of the claim's time in a drain. Now the held rows are read once, in the walk's
-- order, each with whether it is still waiting; one that is not is handed back to the relay, which
-- gives its hold back with its next claim (as it does for every recorded message). The sending
-- list is sorted once and searched by bisection.

DROP FUNCTION sms_claim(integer, bigint[], bigint[]);

-- The walk and the holds are as before. Each held message comes back as a row; `waiting` false
-- means another relay finished it after the walk began: nothing but id and seq is meant, and the
-- caller gives the hold back (p_done). When the walk ran out of due messages before p_limit, the
-- last row has every column NULL but next_due_ms: the milliseconds until the earliest waiting
-- message no relay holds comes due (NULL when none waits).
CREATE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
RETURNS TABLE (id uuid, seq bigint, waiting boolean, recipient text, template text, locale text, params text,
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
    since timestamptz;
    mine  bigint[];
BEGIN
    PERFORM sms_unhold(d) FROM unnest(p_done) AS d;
    -- Sorted, so that width_bucket() finds a seq in it by binary search.
    mine := ARRAY(SELECT h FROM unnest(p_sending) AS h ORDER BY h);
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
            CONTINUE WHEN mine[width_bucket(c.seq, mine)] = c.seq;
            IF sms_hold(c.seq) THEN
                n := n + 1;
                ids[n] := c.id;
                seqs[n] := c.seq;
                EXIT WHEN n >= p_limit;
            END IF;
        END LOOP;
    END IF;
    IF n > 0 THEN
        -- This session's start, read once per session.
        since := nullif(current_setting('sms.holder_since', true), '')::timestamptz;
        IF since IS NULL THEN
            SELECT a.backend_start INTO since FROM pg_stat_activity a WHERE a.pid = pg_backend_pid();
            PERFORM set_config('sms.holder_since', since::text, false);
        END IF;
        -- Read with a fresh snapshot, in the walk's order: a message another relay finished after
        -- the walk began (and let go before this session took it) comes back with waiting false,
        -- and the relay gives its hold back with its next claim.
        RETURN QUERY
            SELECT h.id, h.seq, coalesce(o.state = 'pending' AND o.next_attempt_at <= now(), false),
                   o.recipient, o.template, o.locale, o.params::text, t.body, t.max_parts,
                   o.attempts + 1, o.superseded_by IS NOT NULL,
                   (extract(epoch FROM o.expires_at - now()) * 1000)::float8,
                   o.resend_reason, o.resend_skip, pg_backend_pid(), since, NULL::float8
              FROM unnest(ids, seqs) WITH ORDINALITY AS h(id, seq, pos)
              LEFT JOIN sms_outbox o ON o.id = h.id
              LEFT JOIN sms_templates t ON t.name = o.template AND t.locale = o.locale
             ORDER BY h.pos;
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
    'The relay''s claim: holds up to p_limit due messages for this session, other than the p_sending it holds already (after giving back the holds in p_done), and returns them (waiting false: finished meanwhile, give the hold back); below p_limit, a last row with only next_due_ms set says when the next waiting message comes due.';

-- A new function may be run by anyone until the roles script takes that away; take it away here
-- if that script has run, and give it back to the relay's role.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_relay_worker') THEN
        REVOKE ALL ON FUNCTION sms_claim(integer, bigint[], bigint[]) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION sms_claim(integer, bigint[], bigint[]) TO sms_relay_worker;
    END IF;
END $$;

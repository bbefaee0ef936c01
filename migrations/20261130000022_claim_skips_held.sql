-- The claim does a quarter less work per message: the messages this relay is sending are
-- skipped by a hash lookup, and the held messages are read once instead of twice.
--
-- A relay with a backlog sends up to relay.max_in_flight messages at once, so each claim's walk
-- passes the messages it is still sending (the first ones in claim order) before it reaches new
-- ones. It skipped each through a loop iteration and a key lookup in a JSON object built from
-- p_sending on every call: about 2 us per claimed message with a thousand in flight. The walk's
-- query now leaves them out itself, through a hash table PostgreSQL builds from p_sending once
-- per call.
--
-- The fresh re-read of the held messages was a query of its own, followed by the query that
-- returns them; the returned rows now come from the re-read itself, and the rare message no longer
-- waiting is let go within it.

CREATE OR REPLACE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
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
    got   bigint;
    since timestamptz;
BEGIN
    PERFORM sms_unhold(d) FROM unnest(p_done) AS d;
    IF p_limit > 0 THEN
        -- The LIMIT makes the planner walk the claim index in order instead of sorting every
        -- waiting message; no more messages can be held than the lock table has room for. The
        -- messages this session is sending are skipped by a hash of p_sending, built once.
        FOR c IN SELECT q.id, q.seq FROM sms_queue q
                  WHERE q.next_attempt_at <= now() AND q.seq NOT IN (SELECT unnest(p_sending))
                  ORDER BY q.priority, q.expires_at
                  LIMIT p_limit + current_setting('max_locks_per_transaction')::integer
                        * (current_setting('max_connections')::integer
                           + current_setting('max_prepared_transactions')::integer)
        LOOP
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
        -- Read again with a fresh snapshot: a message another relay finished after the walk began
        -- can be held once that relay let go; it is let go again here and not returned.
        RETURN QUERY
            SELECT o.id, o.seq, o.recipient, o.template, o.locale, o.params::text, t.body, t.max_parts,
                   o.attempts + 1, o.superseded_by IS NOT NULL,
                   (extract(epoch FROM o.expires_at - now()) * 1000)::float8,
                   o.resend_reason, o.resend_skip, pg_backend_pid(), since, NULL::float8
              FROM sms_outbox o
              LEFT JOIN sms_templates t ON t.name = o.template AND t.locale = o.locale
             WHERE o.id = ANY (ids)
               AND CASE WHEN o.state = 'pending' AND o.next_attempt_at <= now() THEN true
                        ELSE NOT sms_unhold(o.seq) END
             ORDER BY o.priority, o.expires_at;
        -- A message deleted meanwhile is not read at all: let it go too.
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < n THEN
            PERFORM sms_unhold(h.seq) FROM unnest(ids, seqs) AS h(id, seq)
              WHERE NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.id = h.id);
        END IF;
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

-- Holds by group: one lock-table entry covers sixteen consecutive messages.
--
-- Each message a relay is sending was one entry in PostgreSQL's shared lock table, and a relay may
-- fill only a quarter of that table (1,600 entries at the server's defaults), so it could have
-- only about three claims of 500 in flight: the recordings of two and the claim of a third. A
-- deeper pipeline kept the database busier, but needed more entries.
--
-- A hold's key is now the message's group: seq / 16. A session takes the lock once per message it
-- holds (PostgreSQL counts a session's repeated takes of one lock in the session's own memory, not
-- in the shared table) and gives it back once per message, so holding and giving back stay per
-- message, while a claim of consecutive messages fills a sixteenth of the entries.
--
-- What changes for everyone else: a message whose group another relay holds is passed over by the
-- claims of the other relays, and `sms_free()` says it is being sent, until that relay has let go
-- of every message of the group. A relay that holds a group takes the group's other messages
-- itself as they come due. Superseding, an operator's retry or cancel and a receipt's withdrawal
-- treat such a message as one being sent: the relay ends a superseded one when it claims it, and
-- the operator tries again a moment later.
--
-- Stop every relay of an earlier version before running this migration: their holds use the old
-- keys.

-- Messages per hold: consecutive seqs share one lock.
CREATE FUNCTION sms_hold_group_size() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 16 $$;
COMMENT ON FUNCTION sms_hold_group_size() IS
    'How many consecutive messages (by seq) share one hold''s lock.';

-- The message's group, folded into 31 bits (two groups 2^31 apart never wait at the same time).
CREATE OR REPLACE FUNCTION sms_hold_key(seq bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ((seq / sms_hold_group_size()) % 2147483648)::integer
$$;

-- The claim returns each message's hold key too, so the relay can count the lock-table entries
-- it fills.
DROP FUNCTION sms_claim(integer, bigint[], bigint[]);
CREATE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
RETURNS TABLE (id uuid, seq bigint, recipient text, template text, locale text, params text,
               body text, max_parts smallint, round integer, superseded boolean,
               remaining_ms double precision, resend_reason text, resend_skip text,
               holder integer, holder_since timestamptz, next_due_ms double precision, hold integer)
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
                        * sms_hold_group_size()
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
                   o.resend_reason, o.resend_skip, pg_backend_pid(), since, NULL::float8,
                   sms_hold_key(o.seq)
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
COMMENT ON FUNCTION sms_claim(integer, bigint[], bigint[]) IS
    'The relay''s claim: holds up to p_limit due messages for this session, other than the p_sending it holds already (after giving back the holds in p_done), and returns them with their hold keys.';

-- After a claim failed part way, the holds this session took that no claim returned: every hold
-- but one per message in `keep` (the messages the relay is sending) is given back. A group none
-- of them is in is let go entirely; one that some of them are in is first held in share mode,
-- which keeps every other session out, while this session gives back all its takes and takes it
-- again once per message kept. Returns how many takes it gave back, net.
DROP FUNCTION sms_unhold_all_but(bigint[]);
CREATE FUNCTION sms_unhold_all_but(keep bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    g        record;
    released bigint := 0;
BEGIN
    FOR g IN SELECT l.objid::bigint::integer AS hold, coalesce(k.n, 0) AS kept
               FROM pg_locks l
               LEFT JOIN (SELECT sms_hold_key(s) AS hold, count(*) AS n FROM unnest(keep) AS s GROUP BY 1) k
                 ON k.hold = l.objid::bigint::integer
              WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                AND l.mode = 'ExclusiveLock'
                AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
                AND l.classid = 1397576497::oid AND l.objsubid = 2
    LOOP
        IF g.kept > 0 THEN
            PERFORM pg_advisory_lock_shared(1397576497, g.hold);
        END IF;
        WHILE pg_advisory_unlock(1397576497, g.hold) LOOP
            released := released + 1;
        END LOOP;
        IF g.kept > 0 THEN
            FOR i IN 1..g.kept LOOP
                IF NOT pg_try_advisory_lock(1397576497, g.hold) THEN
                    RAISE EXCEPTION 'sms_unhold_all_but: lost the hold % while giving back', g.hold;
                END IF;
            END LOOP;
            released := released - g.kept;
            PERFORM pg_advisory_unlock_shared(1397576497, g.hold);
        END IF;
    END LOOP;
    RETURN released;
END $$;

-- Messages being sent right now, per relay: the waiting messages in the groups it holds (the ones
-- it is sending, and any that came due behind them in a group it still holds, which it takes
-- itself on its next claim). Counted by seq range, which is exact while seqs stay below 2^35.
CREATE OR REPLACE VIEW sms_holds AS
SELECT a.application_name AS relay, a.pid, count(q.seq) AS messages, count(DISTINCT l.objid) AS holds
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
  LEFT JOIN sms_queue q
    ON q.seq >= l.objid::int8 * sms_hold_group_size()
   AND q.seq < (l.objid::int8 + 1) * sms_hold_group_size()
 WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
   AND l.classid = 1397576497::oid AND l.objsubid = 2
   AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
 GROUP BY a.application_name, a.pid;
COMMENT ON VIEW sms_holds IS 'Messages being sent right now, per relay: each relay holds the messages it claimed, sixteen consecutive ones to a lock, until their outcome is recorded.';
COMMENT ON COLUMN sms_holds.holds IS 'Entries of the server''s lock table the relay fills: one per group of consecutive messages it holds.';

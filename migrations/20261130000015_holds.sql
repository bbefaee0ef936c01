-- Claims that write nothing. A relay now holds the messages it is sending with session-level
-- advisory locks taken by the claim, instead of writing each message twice (pending -> sending at
-- the claim, then its outcome). A message being sent stays `pending` in the table, held by the
-- relay's claim connection; PostgreSQL drops the holds the moment that connection ends, so a
-- crashed, killed or OOM-killed relay's messages are claimable again at once. A lost machine or a
-- network partition is noticed by the TCP keepalive the relay sets on its claim connection.
--
-- Stop every relay of an earlier version before running this migration: their claims are put
-- back below, and their completions would no longer apply.

-- The messages earlier relays had claimed are due again (their rounds stay counted).
UPDATE sms_outbox
   SET state = 'pending', next_attempt_at = now(), claimed_by = NULL,
       last_error = 'put back: claims are holds now'
 WHERE state = 'sending';

-- One advisory-lock key per message: a fixed first key (so these locks never meet another
-- application's, nor the maintenance jobs', which use the two-key form with other first keys) and
-- the message's seq folded into 31 bits (two messages 2^31 apart never wait at the same time).
CREATE FUNCTION sms_hold_key(seq bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (seq % 2147483648)::integer $$;

-- Takes this session's hold on a message; false when another session holds it.
CREATE FUNCTION sms_hold(seq bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$ SELECT pg_try_advisory_lock(1397576497, sms_hold_key(seq)) $$;

-- Gives back one hold this session took.
CREATE FUNCTION sms_unhold(seq bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$ SELECT pg_advisory_unlock(1397576497, sms_hold_key(seq)) $$;

-- Whether no relay is sending the message now; if so it stays that way until the caller's
-- transaction ends. Everything but the holding relay changes a waiting message only where this is
-- true. Costed high so the planner checks it after every cheaper condition.
CREATE FUNCTION sms_free(seq bigint) RETURNS boolean
LANGUAGE sql VOLATILE COST 1000 AS $$ SELECT pg_try_advisory_xact_lock(1397576497, sms_hold_key(seq)) $$;

COMMENT ON FUNCTION sms_free(bigint) IS
    'Whether no relay is sending this message right now (and none can start before the calling transaction ends).';

-- The claim. Walks due messages in priority then deadline order, holds up to p_limit of them, then
-- reads the held ones again with a fresh snapshot: a message another relay finished after the walk
-- began can be held once that relay let go, and is let go again here. The walk runs as a cursor,
-- so holds are taken only on the rows the loop reaches, whatever plan the planner picks.
-- p_sending: the messages this session holds and is sending (a session takes its own lock again, so
-- the walk skips them by this list). p_done: holds it no longer needs (messages whose outcome is
-- recorded), given back first.
-- Each row names its holder (this session's pid and start): a round is recorded as its holder's only
-- while that session lives.
CREATE FUNCTION sms_claim(p_limit integer, p_sending bigint[] DEFAULT '{}', p_done bigint[] DEFAULT '{}')
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
        FOR c IN SELECT o.id, o.seq FROM sms_outbox o
                  WHERE o.state = 'pending' AND o.next_attempt_at <= now()
                  ORDER BY o.priority, o.expires_at
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
COMMENT ON FUNCTION sms_claim(integer, bigint[], bigint[]) IS
    'The relay''s claim: holds up to p_limit due messages for this session, other than the p_sending it holds already (after giving back the holds in p_done), and returns them.';

-- After a claim failed part way, the holds this session took that no claim returned: every hold
-- but `keep` (the messages the relay is sending) is given back. Returns how many.
CREATE FUNCTION sms_unhold_all_but(keep bigint[]) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT count(*) FILTER (WHERE pg_advisory_unlock(1397576497, l.objid::bigint::integer))
    FROM pg_locks l
   WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
     AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
     AND l.classid = 1397576497::oid AND l.objsubid = 2
     AND l.objid::bigint::integer <> ALL (ARRAY(SELECT sms_hold_key(k) FROM unnest(keep) AS k))
$$;

-- The messages being sent right now, per relay (its claim connection's application_name).
CREATE VIEW sms_holds AS
SELECT a.application_name AS relay, a.pid, count(*) AS messages
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1397576497::oid AND l.objsubid = 2
   AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
 GROUP BY a.application_name, a.pid;
COMMENT ON VIEW sms_holds IS 'Messages being sent right now, per relay: each relay holds the messages it claimed until their outcome is recorded.';

-- The state machine without `sending`: a claim no longer changes the row.
--
--   from     to         was_sent  event
--   pending  sent       any       a provider accepted it, or a resend withdrawn
--   pending  failed     no        bad recipient, unrenderable, out of rounds
--   pending  expired    no        validity ended before a provider accepted it
--   pending  cancelled  no        superseded, or cancelled by an operator
--   failed,  sent       no        a provider accepted a copy sent by a relay that had lost its
--   expired,                      claim (its connection ended mid-round), after another relay had
--   cancelled                     ended the message unsent
--   sent     pending    yes       resend (a receipt said undelivered, or none came in time)
--   failed   pending    no        an operator's retry
-- (A round that ends in a retry leaves the message pending, with its next time and round count.)
CREATE OR REPLACE FUNCTION sms_transition_allowed(from_state sms_state, to_state sms_state, was_sent boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
           WHEN from_state = to_state THEN true
           WHEN from_state = 'pending' THEN
                to_state = 'sent' OR (to_state IN ('failed', 'expired', 'cancelled') AND NOT was_sent)
           WHEN from_state = 'sent' THEN to_state = 'pending' AND was_sent
           WHEN from_state = 'failed' THEN to_state IN ('pending', 'sent') AND NOT was_sent
           WHEN from_state IN ('expired', 'cancelled') THEN to_state = 'sent' AND NOT was_sent
           ELSE false
         END
$$;

CREATE OR REPLACE FUNCTION sms_sent_at_allowed(from_state sms_state, to_state sms_state,
                                               old_sent_at timestamptz, new_sent_at timestamptz)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
           WHEN old_sent_at IS NOT NULL THEN new_sent_at IS NOT DISTINCT FROM old_sent_at
           WHEN new_sent_at IS NOT NULL THEN to_state = 'sent'
           ELSE true
         END
$$;
COMMENT ON FUNCTION sms_sent_at_allowed(sms_state, sms_state, timestamptz, timestamptz) IS
    'Whether an update keeps sms_outbox.sent_at set once: only a move to sent may set it, nothing may change it after.';

ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_no_sending CHECK (state <> 'sending');
DROP INDEX sms_outbox_lease_idx;
COMMENT ON COLUMN sms_outbox.next_attempt_at IS 'When the waiting message becomes due.';
COMMENT ON COLUMN sms_outbox.attempts IS 'Rounds finished: each round walks the provider chain once.';
COMMENT ON COLUMN sms_outbox.claimed_by IS 'Not written any more: see the sms_holds view for what each relay is sending.';
COMMENT ON COLUMN sms_outbox.superseded_by IS
    'The newer message for the same recipient and purpose that superseded this one (set also while this one was being sent).';

-- A relay's second send of a round (its claim connection ended while a call was out, and another
-- relay, or itself, claimed the message again) is recorded too: one row per call, keyed by when
-- the call started, so a retried write of the same row still lands once.
ALTER TABLE sms_attempts DROP CONSTRAINT sms_attempts_message_id_attempt_number_chain_step_key;
ALTER TABLE sms_attempts ADD CONSTRAINT sms_attempts_call_key
    UNIQUE (message_id, attempt_number, chain_step, started_at);

-- Superseding: a waiting message no relay is sending is cancelled (or, a resend, withdrawn); one
-- being sent is only marked, and its relay ends it (a retry becomes cancelled, an acceptance stays).
CREATE OR REPLACE FUNCTION sms_outbox_supersede() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sms_outbox o
       SET state = CASE WHEN NOT w.free THEN o.state
                        WHEN o.sent_at IS NULL THEN 'cancelled' ELSE 'sent' END::sms_state,
           finished_at = CASE WHEN w.free THEN now() END,
           superseded_by = NEW.id,
           last_error = CASE WHEN NOT w.free THEN o.last_error
                             WHEN o.sent_at IS NULL THEN 'superseded by a newer message'
                             ELSE 'resend withdrawn: superseded by a newer message' END,
           resends = CASE WHEN w.free AND o.sent_at IS NOT NULL THEN o.resends - 1 ELSE o.resends END,
           resend_reason = CASE WHEN w.free THEN NULL ELSE o.resend_reason END,
           resend_of = CASE WHEN w.free THEN NULL ELSE o.resend_of END
      FROM (SELECT p.id, sms_free(p.seq) AS free FROM sms_outbox p
             WHERE p.recipient = NEW.recipient AND p.purpose = NEW.purpose
               AND p.state = 'pending' AND p.seq < NEW.seq) w
     WHERE o.id = w.id;
    RETURN NULL;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_outbox_supersede() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- The operator's events refuse a message a relay is sending right now.
CREATE OR REPLACE FUNCTION sms_retry(message_id uuid, margin interval DEFAULT interval '3 seconds')
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m sms_outbox;
BEGIN
    SELECT * INTO m FROM sms_outbox o WHERE o.id = message_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sms_retry: no message %', message_id USING ERRCODE = 'SR014';
    END IF;
    IF m.sent_at IS NOT NULL THEN
        RAISE EXCEPTION 'sms_retry: message % was sent already (state %)', message_id, m.state
            USING ERRCODE = 'SR014';
    END IF;
    IF m.state NOT IN ('pending', 'failed') THEN
        RAISE EXCEPTION 'sms_retry: message % is %, only a failed or waiting message can be retried',
            message_id, m.state USING ERRCODE = 'SR014';
    END IF;
    IF m.state = 'pending' AND NOT sms_free(m.seq) THEN
        RAISE EXCEPTION 'sms_retry: message % is being sent right now', message_id USING ERRCODE = 'SR014';
    END IF;
    IF m.expires_at - margin <= now() THEN
        RAISE EXCEPTION 'sms_retry: the code of message % is no longer valid (expires %)',
            message_id, m.expires_at USING ERRCODE = 'SR014';
    END IF;
    UPDATE sms_outbox o
       SET state = 'pending', next_attempt_at = now(), finished_at = NULL, claimed_by = NULL,
           last_error = concat('retried by an operator; before: ', m.last_error)
     WHERE o.id = message_id;
    PERFORM pg_notify('sms_relay_wakeup', '');
END $$;

CREATE OR REPLACE FUNCTION sms_cancel(message_id uuid, reason text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m sms_outbox;
BEGIN
    IF coalesce(btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'sms_cancel: give a reason' USING ERRCODE = 'SR014';
    END IF;
    SELECT * INTO m FROM sms_outbox o WHERE o.id = message_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sms_cancel: no message %', message_id USING ERRCODE = 'SR014';
    END IF;
    IF m.state <> 'pending' THEN
        RAISE EXCEPTION 'sms_cancel: message % is %, only a waiting message can be cancelled',
            message_id, m.state USING ERRCODE = 'SR014';
    END IF;
    IF NOT sms_free(m.seq) THEN
        RAISE EXCEPTION 'sms_cancel: message % is being sent right now', message_id USING ERRCODE = 'SR014';
    END IF;
    UPDATE sms_outbox o
       SET state = CASE WHEN m.sent_at IS NULL THEN 'cancelled' ELSE 'sent' END::sms_state,
           finished_at = now(), claimed_by = NULL, resend_reason = NULL, resend_of = NULL,
           resends = CASE WHEN m.sent_at IS NULL THEN o.resends ELSE o.resends - 1 END,
           last_error = CASE WHEN m.sent_at IS NULL THEN concat('cancelled by an operator: ', reason)
                             ELSE concat('resend withdrawn by an operator: ', reason) END
     WHERE o.id = message_id;
END $$;

-- A delivered receipt withdraws a waiting resend only while no relay is sending it.
CREATE OR REPLACE FUNCTION sms_apply_receipt(
    p_receipt bigint, p_providers text[], p_max_resends integer, p_expiry_margin interval,
    OUT result text, OUT resent boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r   sms_receipts;
    att sms_attempts;
BEGIN
    -- Locked first (then the attempt, then the message), so two relays matching the same stored
    -- receipt again take turns, and the second sees it applied.
    SELECT * INTO r FROM sms_receipts WHERE id = p_receipt FOR UPDATE;
    IF r.result <> 'unmatched' THEN
        result := r.result;
        resent := r.resent;
        RETURN;
    END IF;
    resent := false;
    SELECT * INTO att FROM sms_attempts a
     WHERE a.provider = ANY (p_providers) AND a.outcome = 'accepted'
       AND (a.provider_message_id = r.provider_message_id OR a.client_ref = r.client_ref)
     ORDER BY a.id DESC LIMIT 1
     FOR UPDATE;
    IF NOT FOUND THEN
        result := 'unmatched';
        RETURN;
    END IF;

    IF sms_delivery_rank(r.delivery_status) > sms_delivery_rank(att.delivery_status) THEN
        UPDATE sms_attempts
           SET delivery_status = r.delivery_status, delivery_error = r.error_code, receipt_at = r.received_at,
               delivered_at = CASE WHEN r.delivery_status = 'delivered' THEN coalesce(r.done_at, r.received_at) END,
               cost = coalesce(r.cost, cost),
               currency = CASE WHEN r.cost IS NULL THEN currency ELSE r.currency END
         WHERE id = att.id;
        result := 'applied';
        IF r.delivery_status IN ('undelivered', 'failed', 'expired') AND NOT r.permanent THEN
            resent := sms_resend(att.id,
                                 format('receipt from %s said %s%s', att.provider, r.delivery_status,
                                        coalesce(' (' || r.error_code || ')', '')),
                                 p_max_resends, p_expiry_margin);
        ELSIF r.delivery_status = 'delivered' THEN
            -- Not yet sent (waiting, and no relay sending it right now): the resend is withdrawn.
            UPDATE sms_outbox o
               SET state = 'sent', finished_at = now(), resends = o.resends - 1, resend_reason = NULL,
                   resend_of = NULL, last_error = 'resend withdrawn: the earlier copy was delivered'
             WHERE o.id = att.message_id AND o.state = 'pending' AND o.resend_of = att.id
               AND sms_free(o.seq);
        END IF;
    ELSE
        result := 'stale';
    END IF;
    UPDATE sms_receipts SET attempt_id = att.id, result = sms_apply_receipt.result, resent = sms_apply_receipt.resent
     WHERE id = p_receipt;
END $$;

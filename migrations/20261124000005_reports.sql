-- Analysts' interface (DESIGN §5): report views over sms_attempts and sms_outbox that carry
-- provider, template, operator and country but never a recipient, params, body or receipt payload;
-- and the schema-level half of least privilege (sql/roles.sql is the other half).
--
-- Every view is a daily series: `day` is a UTC calendar day, so the same view serves psql, BI tools
-- and `sms-relay report`; sql/reports/*.sql select the days that overlap a window. The views run
-- with their owner's rights, so a role granted SELECT on them needs nothing on the tables below.

-- The ratio of two counts, NULL when there is nothing to divide by, to four decimal places.
CREATE FUNCTION sms_report_ratio(part bigint, whole bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT round(part::numeric / nullif(whole, 0), 4)
$$;
COMMENT ON FUNCTION sms_report_ratio(bigint, bigint) IS
  'part / whole rounded to 4 decimal places; NULL when whole is 0 or NULL.';

-- The class of a last_error: the text before its first colon or semicolon, e.g. "bad_recipient
-- from twilio (21211)", "validity ends before the next retry", "gave up after 5 rounds". The
-- provider's own words after it (scrubbed, but free text) stay out of the reports.
CREATE FUNCTION sms_report_error_class(last_error text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT nullif(btrim(substring(last_error FROM '^[^:;]*')), '')
$$;
COMMENT ON FUNCTION sms_report_error_class(text) IS
  'The text of a last_error before its first ":" or ";" (the relay''s reason class, without the provider''s message).';

-- Cost ------------------------------------------------------------------------------------------

CREATE VIEW sms_report_cost_daily AS
SELECT (a.started_at AT TIME ZONE 'UTC')::date AS day,
       a.provider,
       a.operator,
       a.country,
       a.currency::text AS currency,
       count(*)               AS attempts,
       sum(a.segments)        AS segments,
       sum(a.cost)            AS cost
  FROM sms_attempts a
 GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW sms_report_cost_daily IS
  'Spend per UTC day, provider, operator, country and currency, from every provider call. Calls '
  'without a price (refused, failed, or no price configured) form the row whose currency is NULL.';
COMMENT ON COLUMN sms_report_cost_daily.day IS 'UTC day the calls started (sms_attempts.started_at).';
COMMENT ON COLUMN sms_report_cost_daily.provider IS 'Provider name as configured ([[providers]] name).';
COMMENT ON COLUMN sms_report_cost_daily.operator IS 'Destination operator from the number prefix (sms_operator()).';
COMMENT ON COLUMN sms_report_cost_daily.country IS 'Destination ISO country from the number prefix (sms_country()); ZZ unknown.';
COMMENT ON COLUMN sms_report_cost_daily.currency IS 'ISO 4217 currency of cost; NULL for calls without a price.';
COMMENT ON COLUMN sms_report_cost_daily.attempts IS 'Provider calls.';
COMMENT ON COLUMN sms_report_cost_daily.segments IS 'SMS segments (parts) of those calls, billed or not.';
COMMENT ON COLUMN sms_report_cost_daily.cost IS 'Sum of sms_attempts.cost in currency; NULL when no call had a price.';

-- Delivery rate ---------------------------------------------------------------------------------

CREATE VIEW sms_report_delivery_rate AS
WITH counts AS (
    SELECT (a.started_at AT TIME ZONE 'UTC')::date AS day,
           a.provider,
           a.operator,
           a.template,
           count(*) AS attempts,
           count(*) FILTER (WHERE a.outcome = 'accepted') AS accepted,
           count(*) FILTER (WHERE a.outcome = 'accepted'
                              AND a.delivery_status IN ('delivered', 'undelivered', 'failed', 'expired', 'unknown'))
               AS final_receipts,
           count(*) FILTER (WHERE a.outcome = 'accepted' AND a.delivery_status = 'delivered') AS delivered
      FROM sms_attempts a
     GROUP BY 1, 2, 3, 4
)
SELECT day, provider, operator, template, attempts, accepted, final_receipts, delivered,
       sms_report_ratio(delivered, final_receipts) AS delivered_of_final,
       sms_report_ratio(delivered, accepted)       AS delivered_of_accepted
  FROM counts;

COMMENT ON VIEW sms_report_delivery_rate IS
  'Delivery per UTC day, provider, operator and template. Receipts keep arriving after the call, so '
  'the latest days'' rates still rise; receipts are counted for accepted calls only.';
COMMENT ON COLUMN sms_report_delivery_rate.day IS 'UTC day the calls started (sms_attempts.started_at).';
COMMENT ON COLUMN sms_report_delivery_rate.provider IS 'Provider name.';
COMMENT ON COLUMN sms_report_delivery_rate.operator IS 'Destination operator from the number prefix.';
COMMENT ON COLUMN sms_report_delivery_rate.template IS 'Template name.';
COMMENT ON COLUMN sms_report_delivery_rate.attempts IS 'Provider calls, whatever their outcome.';
COMMENT ON COLUMN sms_report_delivery_rate.accepted IS 'Calls the provider accepted (outcome accepted).';
COMMENT ON COLUMN sms_report_delivery_rate.final_receipts IS
  'Accepted calls with a final delivery status: delivered, undelivered, failed, expired or unknown.';
COMMENT ON COLUMN sms_report_delivery_rate.delivered IS 'Accepted calls whose delivery status is delivered.';
COMMENT ON COLUMN sms_report_delivery_rate.delivered_of_final IS
  'delivered / final_receipts (4 decimals); NULL when no final receipt came.';
COMMENT ON COLUMN sms_report_delivery_rate.delivered_of_accepted IS
  'delivered / accepted (4 decimals); NULL when nothing was accepted.';

-- Time to deliver -------------------------------------------------------------------------------

CREATE VIEW sms_report_time_to_deliver AS
WITH delivered AS (
    SELECT (a.started_at AT TIME ZONE 'UTC')::date AS day,
           a.provider,
           a.operator,
           extract(epoch FROM a.delivered_at - o.created_at) * 1000 AS enqueue_ms,
           extract(epoch FROM a.delivered_at - a.started_at) * 1000 AS provider_ms
      FROM sms_attempts a
      LEFT JOIN sms_outbox o ON o.id = a.message_id
     WHERE a.delivery_status = 'delivered' AND a.delivered_at IS NOT NULL
)
SELECT day,
       provider,
       CASE WHEN grouping(operator) = 1 THEN '(all)' ELSE operator END AS operator,
       count(*) AS delivered,
       round(percentile_cont(0.5)  WITHIN GROUP (ORDER BY enqueue_ms::float8)::numeric, 1)  AS enqueue_p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY enqueue_ms::float8)::numeric, 1)  AS enqueue_p95_ms,
       round(percentile_cont(0.5)  WITHIN GROUP (ORDER BY provider_ms::float8)::numeric, 1) AS provider_p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY provider_ms::float8)::numeric, 1) AS provider_p95_ms
  FROM delivered
 GROUP BY GROUPING SETS ((day, provider), (day, provider, operator));

COMMENT ON VIEW sms_report_time_to_deliver IS
  'How long delivered messages took to reach the phone, per UTC day and provider (operator "(all)") '
  'and per day, provider and operator. Percentiles interpolate (percentile_cont).';
COMMENT ON COLUMN sms_report_time_to_deliver.day IS 'UTC day the delivering call started.';
COMMENT ON COLUMN sms_report_time_to_deliver.provider IS 'Provider that delivered.';
COMMENT ON COLUMN sms_report_time_to_deliver.operator IS 'Destination operator from the number prefix; "(all)" on the provider''s total row.';
COMMENT ON COLUMN sms_report_time_to_deliver.delivered IS 'Calls with a delivered receipt and a delivery time.';
COMMENT ON COLUMN sms_report_time_to_deliver.enqueue_p50_ms IS
  'Median of delivered_at - sms_outbox.created_at in ms: enqueue to phone, retries and resends included. '
  'created_at is the enqueuing transaction''s start; NULL once the outbox rows are pruned.';
COMMENT ON COLUMN sms_report_time_to_deliver.enqueue_p95_ms IS '95th percentile of the same, in ms.';
COMMENT ON COLUMN sms_report_time_to_deliver.provider_p50_ms IS
  'Median of delivered_at - sms_attempts.started_at in ms: the delivering call to the phone.';
COMMENT ON COLUMN sms_report_time_to_deliver.provider_p95_ms IS '95th percentile of the same, in ms.';

-- Failure reasons -------------------------------------------------------------------------------

CREATE VIEW sms_report_failures AS
SELECT (a.started_at AT TIME ZONE 'UTC')::date AS day,
       'attempt'::text AS source,
       a.provider,
       a.outcome::text AS status,
       a.error_code AS reason,
       count(*) AS count
  FROM sms_attempts a
 WHERE a.outcome <> 'accepted'
 GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT (a.started_at AT TIME ZONE 'UTC')::date, 'receipt', a.provider, a.delivery_status::text, a.delivery_error, count(*)
  FROM sms_attempts a
 WHERE a.delivery_status IN ('undelivered', 'failed', 'expired', 'unknown')
 GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT (o.created_at AT TIME ZONE 'UTC')::date, 'message', NULL, o.state::text, sms_report_error_class(o.last_error), count(*)
  FROM sms_outbox o
 WHERE o.state IN ('failed', 'expired')
 GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW sms_report_failures IS
  'What went wrong, per UTC day, from three sources: provider calls that were not accepted (by outcome '
  'and provider error code), receipts that did not say delivered (by status and receipt error code), '
  'and messages that ended failed or expired (by the class of their last_error).';
COMMENT ON COLUMN sms_report_failures.day IS
  'UTC day: the call''s start for attempt and receipt rows, the message''s creation for message rows.';
COMMENT ON COLUMN sms_report_failures.source IS 'attempt, receipt or message.';
COMMENT ON COLUMN sms_report_failures.provider IS 'Provider called; NULL for message rows.';
COMMENT ON COLUMN sms_report_failures.status IS
  'attempt: sms_outcome (bad_recipient, provider_error, unknown); receipt: sms_delivery (undelivered, '
  'failed, expired, unknown); message: sms_state (failed, expired).';
COMMENT ON COLUMN sms_report_failures.reason IS
  'attempt: the provider''s error code; receipt: the receipt''s error code; message: the class of '
  'last_error (its text before the first ":" or ";"). NULL when there is none.';
COMMENT ON COLUMN sms_report_failures.count IS 'Calls, receipts or messages.';

-- Attempts per delivered message -----------------------------------------------------------------

CREATE VIEW sms_report_attempts_per_delivered AS
WITH messages AS (
    SELECT a.message_id,
           (min(a.started_at) AT TIME ZONE 'UTC')::date AS day,
           count(*) AS attempts,
           count(DISTINCT a.provider) AS providers
      FROM sms_attempts a
     GROUP BY a.message_id
    HAVING bool_or(a.delivery_status = 'delivered')
)
SELECT day,
       count(*) AS delivered_messages,
       round(avg(attempts), 2) AS attempts_avg,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY attempts) AS attempts_p50,
       max(attempts) AS attempts_max,
       round(avg(providers), 2) AS providers_avg,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY providers) AS providers_p50,
       max(providers) AS providers_max
  FROM messages
 GROUP BY day;

COMMENT ON VIEW sms_report_attempts_per_delivered IS
  'Provider calls and distinct providers it took per message that some call delivered, per UTC day '
  'of the message''s first call. Every call of the message counts, including any after the one that delivered.';
COMMENT ON COLUMN sms_report_attempts_per_delivered.day IS 'UTC day of the message''s first provider call.';
COMMENT ON COLUMN sms_report_attempts_per_delivered.delivered_messages IS 'Messages with a delivered receipt on any call.';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_avg IS 'Mean provider calls per delivered message (2 decimals).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_p50 IS 'Median provider calls per delivered message (interpolated).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_max IS 'Most provider calls any delivered message took.';
COMMENT ON COLUMN sms_report_attempts_per_delivered.providers_avg IS 'Mean distinct providers per delivered message (2 decimals).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.providers_p50 IS 'Median distinct providers per delivered message (interpolated).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.providers_max IS 'Most distinct providers any delivered message used.';

-- Fallback and resend rates ---------------------------------------------------------------------

CREATE VIEW sms_report_fallback_resend AS
WITH messages AS (
    SELECT (min(a.started_at) AT TIME ZONE 'UTC')::date AS day,
           bool_or(a.cause = 'fallback') AS fell_back,
           bool_or(a.cause = 'resend') AS resent
      FROM sms_attempts a
     GROUP BY a.message_id
), counts AS (
    SELECT day,
           count(*) AS messages,
           count(*) FILTER (WHERE fell_back) AS with_fallback,
           count(*) FILTER (WHERE resent) AS with_resend
      FROM messages
     GROUP BY day
)
SELECT day, messages,
       with_fallback, sms_report_ratio(with_fallback, messages) AS fallback_rate,
       with_resend,   sms_report_ratio(with_resend, messages)   AS resend_rate
  FROM counts;

COMMENT ON VIEW sms_report_fallback_resend IS
  'How often messages needed a second provider within a round (fallback) or a receipt-driven resend, '
  'per UTC day of the message''s first provider call.';
COMMENT ON COLUMN sms_report_fallback_resend.day IS 'UTC day of the message''s first provider call.';
COMMENT ON COLUMN sms_report_fallback_resend.messages IS 'Messages with at least one provider call.';
COMMENT ON COLUMN sms_report_fallback_resend.with_fallback IS 'Of those, messages with a call whose cause is fallback.';
COMMENT ON COLUMN sms_report_fallback_resend.fallback_rate IS 'with_fallback / messages (4 decimals).';
COMMENT ON COLUMN sms_report_fallback_resend.with_resend IS 'Of those, messages with a call whose cause is resend.';
COMMENT ON COLUMN sms_report_fallback_resend.resend_rate IS 'with_resend / messages (4 decimals).';

-- Expired and superseded ------------------------------------------------------------------------

CREATE VIEW sms_report_expired_superseded AS
SELECT (o.created_at AT TIME ZONE 'UTC')::date AS day,
       o.template,
       count(*) AS messages,
       count(*) FILTER (WHERE o.state = 'expired') AS expired,
       count(*) FILTER (WHERE o.state = 'cancelled' AND o.last_error LIKE 'superseded%') AS superseded
  FROM sms_outbox o
 GROUP BY 1, 2;

COMMENT ON VIEW sms_report_expired_superseded IS
  'Codes that never went out in time (expired) or were replaced by a newer code for the same '
  'recipient and purpose before they were sent (superseded), per UTC day of enqueue and template.';
COMMENT ON COLUMN sms_report_expired_superseded.day IS 'UTC day the messages were enqueued (sms_outbox.created_at).';
COMMENT ON COLUMN sms_report_expired_superseded.template IS 'Template name.';
COMMENT ON COLUMN sms_report_expired_superseded.messages IS 'Messages enqueued, in any state.';
COMMENT ON COLUMN sms_report_expired_superseded.expired IS 'Of those, messages in state expired.';
COMMENT ON COLUMN sms_report_expired_superseded.superseded IS
  'Of those, messages cancelled because a newer one superseded them (last_error starts "superseded").';

-- Least privilege -------------------------------------------------------------------------------

-- sms_enqueue() and the triggers every INSERT INTO sms_outbox fires run as their owner, so a role
-- holding only EXECUTE on sms_enqueue() or INSERT on sms_outbox can enqueue without reading or
-- writing the tables they consult (templates, settings, allow-list, budgets, sleepers, the
-- sequence). The search path is pinned to this schema and pg_temp (last), so a caller's objects
-- cannot stand in for ours.
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
        'sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean)',
        'sms_outbox_guard()', 'sms_outbox_supersede()', 'sms_outbox_wake()']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp', fn, current_schema());
    END LOOP;
END $$;

-- Running as the owner, sms_enqueue() must not be open to every role (PostgreSQL grants EXECUTE
-- to PUBLIC by default): only the owner and roles granted it (sql/roles.sql: sms_auth) may call it.
REVOKE EXECUTE ON FUNCTION sms_enqueue(text, text, jsonb, timestamptz, text, integer, text, text, boolean) FROM PUBLIC;

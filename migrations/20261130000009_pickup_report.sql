-- How soon the relay reaches a provider after a code is enqueued: the relay's own latency, apart
-- from the carrier's (sms_report_time_to_deliver times delivery to the phone, which waits on
-- receipts).

CREATE VIEW sms_report_pickup AS
WITH per_message AS (
    SELECT (o.created_at AT TIME ZONE 'UTC')::date AS day,
           o.template,
           extract(epoch FROM min(a.started_at) - o.created_at) * 1000 AS first_call_ms,
           extract(epoch FROM min(a.finished_at) FILTER (WHERE a.outcome = 'accepted') - o.created_at) * 1000
               AS accepted_ms
      FROM sms_outbox o
      JOIN sms_attempts a ON a.message_id = o.id
     GROUP BY o.id
)
SELECT day,
       template,
       count(*) AS messages,
       round(percentile_cont(0.5)  WITHIN GROUP (ORDER BY first_call_ms::float8)::numeric, 1) AS first_call_p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY first_call_ms::float8)::numeric, 1) AS first_call_p95_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY first_call_ms::float8)::numeric, 1) AS first_call_p99_ms,
       round(max(first_call_ms), 1) AS first_call_max_ms,
       count(accepted_ms) AS accepted,
       round(percentile_cont(0.5)  WITHIN GROUP (ORDER BY accepted_ms::float8)::numeric, 1) AS accepted_p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY accepted_ms::float8)::numeric, 1) AS accepted_p95_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY accepted_ms::float8)::numeric, 1) AS accepted_p99_ms,
       round(max(accepted_ms), 1) AS accepted_max_ms
  FROM per_message
 GROUP BY day, template;

COMMENT ON VIEW sms_report_pickup IS
  'How soon after its enqueue each message reached a provider, per UTC day of enqueue and template: '
  'to the first provider call, and to the first call a provider accepted (retries and fallbacks '
  'included). Messages no provider was called for are left out. Percentiles interpolate (percentile_cont).';
COMMENT ON COLUMN sms_report_pickup.day IS 'UTC day the message was enqueued (sms_outbox.created_at).';
COMMENT ON COLUMN sms_report_pickup.template IS 'Template name.';
COMMENT ON COLUMN sms_report_pickup.messages IS 'Messages with at least one provider call.';
COMMENT ON COLUMN sms_report_pickup.first_call_p50_ms IS
  'Median of the first call''s started_at - sms_outbox.created_at in ms. created_at is the enqueuing '
  'transaction''s start, so the time the transaction took before its commit is included.';
COMMENT ON COLUMN sms_report_pickup.first_call_p95_ms IS '95th percentile of the same, in ms.';
COMMENT ON COLUMN sms_report_pickup.first_call_p99_ms IS '99th percentile of the same, in ms.';
COMMENT ON COLUMN sms_report_pickup.first_call_max_ms IS 'Longest of the same, in ms.';
COMMENT ON COLUMN sms_report_pickup.accepted IS 'Messages of those that a provider accepted.';
COMMENT ON COLUMN sms_report_pickup.accepted_p50_ms IS
  'Median of the first accepted call''s finished_at - sms_outbox.created_at in ms.';
COMMENT ON COLUMN sms_report_pickup.accepted_p95_ms IS '95th percentile of the same, in ms.';
COMMENT ON COLUMN sms_report_pickup.accepted_p99_ms IS '99th percentile of the same, in ms.';
COMMENT ON COLUMN sms_report_pickup.accepted_max_ms IS 'Longest of the same, in ms.';

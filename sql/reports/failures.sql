-- Failure reasons per UTC day: refused calls, bad receipts, failed and expired messages
-- View sms_report_failures; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/failures.sql
SELECT *
  FROM sms_report_failures
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, source, provider, status, count DESC, reason;

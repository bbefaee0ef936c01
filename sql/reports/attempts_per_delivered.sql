-- Provider calls and providers per delivered message, per UTC day
-- View sms_report_attempts_per_delivered; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/attempts_per_delivered.sql
SELECT *
  FROM sms_report_attempts_per_delivered
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC;

-- Fallback and resend rates per UTC day
-- View sms_report_fallback_resend; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/fallback_resend.sql
SELECT *
  FROM sms_report_fallback_resend
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC;

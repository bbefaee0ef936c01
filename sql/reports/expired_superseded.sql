-- Expired and superseded codes per UTC day and template
-- View sms_report_expired_superseded; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/expired_superseded.sql
SELECT *
  FROM sms_report_expired_superseded
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, template;

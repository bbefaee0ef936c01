-- Time to reach a provider (p50/p95/p99/max in ms) per UTC day and template
-- View sms_report_pickup; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/pickup.sql
SELECT *
  FROM sms_report_pickup
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, template;

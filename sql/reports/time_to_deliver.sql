-- Time to deliver (p50/p95 in ms) per UTC day and provider, and per operator
-- View sms_report_time_to_deliver; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/time_to_deliver.sql
SELECT *
  FROM sms_report_time_to_deliver
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, provider, operator <> '(all)', operator;

-- Delivery rate per UTC day, provider, operator and template
-- View sms_report_delivery_rate; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/delivery_rate.sql
SELECT *
  FROM sms_report_delivery_rate
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, provider, operator, template;

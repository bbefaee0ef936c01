-- Cost per UTC day, provider, operator, country and currency
-- View sms_report_cost_daily; columns in sql/README.md. Every UTC day that overlaps the window:
--   psql "$DATABASE_URL" -v since='7 days' -f sql/reports/cost.sql
SELECT *
  FROM sms_report_cost_daily
 WHERE day >= (now() AT TIME ZONE 'UTC' - :'since'::interval)::date
 ORDER BY day DESC, provider, operator, country, currency;

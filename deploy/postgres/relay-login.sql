-- The relay's login, in sql/roles.sql's sms_relay_worker group; its password from the
-- environment (psql -v relay_password=…). Run after sql/roles.sql; re-running sets the password.
SELECT format('CREATE ROLE sms_relay LOGIN IN ROLE sms_relay_worker')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sms_relay') \gexec
SELECT format('ALTER ROLE sms_relay PASSWORD %L', :'relay_password') \gexec

-- Params that can only be what the template needs: each placeholder's value may be held to a
-- pattern (an OTP code is 4 to 10 digits unless a template says otherwise), and a template caps
-- the parts one message may be billed for.
--
-- New refusal: SR017 a params value does not have the shape its template requires.

ALTER TABLE sms_templates
    ADD COLUMN param_patterns jsonb NOT NULL DEFAULT '{"code": "^[0-9]{4,10}$"}'
        CHECK (jsonb_typeof(param_patterns) = 'object'),
    ADD COLUMN max_parts smallint NOT NULL DEFAULT 2 CHECK (max_parts BETWEEN 1 AND 10);

COMMENT ON COLUMN sms_templates.param_patterns IS
  'Per placeholder, a POSIX regular expression its whole value must match (refused with SR017), '
  'e.g. {"code": "^[0-9]{4,10}$"}, the default. Placeholders not named here take any value '
  'within the general limits (SR012).';
COMMENT ON COLUMN sms_templates.max_parts IS
  'Most SMS parts a message of this template may be billed for; one that renders longer fails '
  'without being sent.';

-- The shape check runs after the general limits of sms_outbox_guard_params (trigger names run in
-- alphabetical order), so a value is first of a sendable size and type.
CREATE FUNCTION sms_outbox_guard_shapes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    patterns jsonb;
    bad      text[];
BEGIN
    SELECT t.param_patterns INTO patterns FROM sms_templates t
     WHERE t.name = NEW.template AND t.locale = NEW.locale;
    bad := ARRAY(
        SELECT p.key FROM jsonb_each_text(patterns) AS p
         WHERE NEW.params ? p.key AND (NEW.params ->> p.key) !~ p.value
         ORDER BY 1);
    IF cardinality(bad) > 0 THEN
        RAISE EXCEPTION 'sms_outbox: params value for placeholder(s) % does not have the shape template "%" requires',
                        array_to_string(bad, ', '), NEW.template
            USING ERRCODE = 'SR017', HINT = 'See sms_templates.param_patterns.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER sms_outbox_guard_shapes BEFORE INSERT ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION sms_outbox_guard_shapes();

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sms_outbox_guard_shapes() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END $$;

-- sms-relay schema: templates, the outbox the auth backend writes to, and one row per provider call.
-- Invariants live here (enums, CHECKs, unique keys) so that a plain INSERT is as guarded as sms_enqueue().

-- Time-ordered UUIDs (version 7) keep the primary-key index append-mostly; PostgreSQL 15 has no uuidv7().
CREATE FUNCTION sms_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

CREATE TYPE sms_state AS ENUM ('pending', 'sending', 'sent', 'failed', 'expired', 'cancelled');
COMMENT ON TYPE sms_state IS
  'pending: waiting to be claimed (new or retry scheduled); sending: claimed by a relay, lease until next_attempt_at; '
  'sent: a provider accepted it; failed/expired/cancelled: final without a send (see last_error).';

CREATE TYPE sms_outcome AS ENUM ('accepted', 'bad_recipient', 'provider_error', 'ambiguous');
COMMENT ON TYPE sms_outcome IS
  'Classified answer of one provider call: accepted; bad_recipient (another provider will not help); '
  'provider_error (outage, throttling, auth or balance: try the next provider); ambiguous (the request may have been sent).';

-- Message templates. Placeholders are {name}; the list is derived from the body by a trigger.
CREATE TABLE sms_templates (
    name         text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    locale       text        NOT NULL DEFAULT 'en' CHECK (locale ~ '^[a-z]{2}(-[A-Z]{2})?$'),
    body         text        NOT NULL CHECK (length(body) BETWEEN 1 AND 1000),
    -- How long a code sent with this template stays valid; the body's wording states the same span.
    validity     interval    NOT NULL CHECK (validity > interval '0'),
    placeholders text[]      NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, locale)
);

CREATE FUNCTION sms_templates_placeholders() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.placeholders := ARRAY(
        SELECT DISTINCT m[1] FROM regexp_matches(NEW.body, '\{([a-z_][a-z0-9_]*)\}', 'g') AS m ORDER BY 1);
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER sms_templates_placeholders BEFORE INSERT OR UPDATE OF body ON sms_templates
    FOR EACH ROW EXECUTE FUNCTION sms_templates_placeholders();

INSERT INTO sms_templates (name, locale, body, validity) VALUES
    ('otp',       'en', 'Your verification code is {code}. Valid for 10 minutes.', interval '10 minutes'),
    ('admin_2fa', 'en', 'Your admin login code is {code}. Valid for 5 minutes.',   interval '5 minutes'),
    ('otp',       'bn', 'আপনার যাচাইকরণ কোড {code}। ১০ মিনিটের জন্য বৈধ।',          interval '10 minutes'),
    ('admin_2fa', 'bn', 'আপনার অ্যাডমিন লগইন কোড {code}। ৫ মিনিটের জন্য বৈধ।',        interval '5 minutes');

-- Enqueue guards an operator can tune without a deploy.
CREATE TABLE sms_settings (
    singleton        boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    -- At most recipient_limit messages per recipient within recipient_window (SMS-pumping guard).
    recipient_limit  integer  NOT NULL DEFAULT 5 CHECK (recipient_limit > 0),
    recipient_window interval NOT NULL DEFAULT interval '15 minutes' CHECK (recipient_window > interval '0')
);
INSERT INTO sms_settings DEFAULT VALUES;

-- Destinations we send to. An empty table allows every E.164 number.
CREATE TABLE sms_allowed_prefixes (
    prefix text PRIMARY KEY CHECK (prefix ~ '^\+[1-9][0-9]{0,5}$'),
    note   text
);
INSERT INTO sms_allowed_prefixes (prefix, note) VALUES ('+880', 'Bangladesh');

-- Orders messages for one recipient: drawn by the enqueue guard after it has locked the
-- recipient's budget row, so it follows commit order per recipient (unlike created_at, which is the
-- transaction's start). Superseding and the "is there a newer message?" checks compare it.
CREATE SEQUENCE sms_outbox_seq;

CREATE TABLE sms_outbox (
    id              uuid        PRIMARY KEY DEFAULT sms_uuid_v7(),
    seq             bigint      NOT NULL,
    state           sms_state   NOT NULL DEFAULT 'pending',
    recipient       text        NOT NULL CHECK (recipient ~ '^\+[1-9][0-9]{6,14}$'),
    template        text        NOT NULL,
    locale          text        NOT NULL DEFAULT 'en',
    params          jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    -- Messages with the same recipient and purpose supersede each other (defaults to the template name).
    purpose         text        NOT NULL,
    -- 0 is the most urgent; claims go by priority, then by the earliest expiry.
    priority        smallint    NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    idempotency_key text        CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    -- The code's validity end: nothing is sent at or after it.
    expires_at      timestamptz NOT NULL,
    -- pending: when the row becomes due; sending: when the claiming relay's lease runs out.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Claim rounds so far; a round walks the provider chain once.
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claimed_by      text,
    last_error      text,
    -- Whether this message cancels older unsent ones for the same recipient and purpose.
    supersede       boolean     NOT NULL DEFAULT true,
    superseded_by   uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT sms_outbox_finished_iff_final
        CHECK ((state IN ('sent', 'failed', 'expired', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT sms_outbox_expiry_after_creation CHECK (expires_at > created_at)
) WITH (
    -- A queue table churns: every message leaves dead versions in the claim index until VACUUM.
    -- Vacuum it after a few thousand changes instead of after 20% of the table (the relay also
    -- vacuums it after bursts, see relay.vacuum_every).
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

COMMENT ON TABLE sms_outbox IS 'Transactional outbox: one row per SMS intent, written in the auth backend''s own transaction.';

-- The claim index: same order as the claim query, due time checked inside the index.
CREATE INDEX sms_outbox_claim_idx ON sms_outbox (priority, expires_at, next_attempt_at)
    WHERE state IN ('pending', 'sending');
-- Unique where given. Partial, so the many messages without a key (and each of their row
-- versions: every claim and completion writes one) add nothing to this index.
CREATE UNIQUE INDEX sms_outbox_idempotency_key_idx ON sms_outbox (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- When the next message comes due (the relay sleeps until then).
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at)
    WHERE state IN ('pending', 'sending');
-- Superseding and the newer-message check look up messages per recipient and purpose.
CREATE INDEX sms_outbox_recipient_idx ON sms_outbox (recipient, purpose, seq);

-- Per-recipient enqueue counter for the rate limit: a row lock serialises enqueues for one
-- recipient only, and under REPEATABLE READ a concurrent enqueue fails instead of slipping through.
CREATE TABLE sms_recipient_budget (
    recipient    text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    used         integer     NOT NULL CHECK (used > 0)
);

-- One row per provider call. Insert-only; analysts read it (columns documented in README.md).
CREATE TABLE sms_attempts (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id          uuid        NOT NULL,
    -- The message's claim round (sms_outbox.attempts at the time) and the provider's place in that round.
    attempt_number      integer     NOT NULL CHECK (attempt_number > 0),
    chain_step          integer     NOT NULL CHECK (chain_step > 0),
    provider            text        NOT NULL,
    template            text        NOT NULL,
    relay_id            text        NOT NULL,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    latency_ms          double precision GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at) * 1000) STORED,
    outcome             sms_outcome NOT NULL,
    http_status         smallint,
    error_code          text,
    error_message       text,
    provider_message_id text,
    segments            smallint    NOT NULL CHECK (segments > 0),
    encoding            text        NOT NULL CHECK (encoding IN ('gsm7', 'ucs2')),
    cost                numeric(14, 6) CHECK (cost >= 0),
    currency            char(3)     CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT sms_attempts_cost_has_currency CHECK ((cost IS NULL) = (currency IS NULL)),
    CONSTRAINT sms_attempts_finished_after_start CHECK (finished_at >= started_at),
    CONSTRAINT sms_attempts_accepted_has_id CHECK (outcome <> 'accepted' OR provider_message_id IS NOT NULL),
    UNIQUE (message_id, attempt_number, chain_step)
);
CREATE INDEX sms_attempts_started_idx ON sms_attempts (started_at);

COMMENT ON TABLE sms_attempts IS 'One row per provider call made by a relay. Never updated by the send path.';

-- Relays that are idle and waiting for a NOTIFY; an idle relay refreshes `since` at least every
-- poll interval. Inserts notify only while a fresh row exists, so a busy queue does not make every
-- enqueue take PostgreSQL's global notify lock at commit, and a crashed relay's row goes stale.
CREATE UNLOGGED TABLE sms_relay_sleepers (
    relay_id text        PRIMARY KEY,
    since    timestamptz NOT NULL DEFAULT now()
);

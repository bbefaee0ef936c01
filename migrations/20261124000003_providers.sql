-- Provider chain (issue 3): the unknown outcome's public name, the client reference of each call,
-- and the circuit breakers' state as each relay last saw it.

-- An answer we could not read (a timeout after the request was written, a dropped connection) is
-- recorded as `unknown`: the provider may or may not have taken the message.
ALTER TYPE sms_outcome RENAME VALUE 'ambiguous' TO 'unknown';
COMMENT ON TYPE sms_outcome IS
  'Class of a provider''s answer: accepted (a provider message id exists); bad_recipient (invalid, '
  'unreachable, opted-out or blocked number: no provider will do better); provider_error (outage, '
  'throttling, auth, balance or sender rejection: try the next provider); unknown (the request may '
  'have reached the provider, e.g. it timed out after being written).';

ALTER TABLE sms_attempts ADD COLUMN client_ref text;
COMMENT ON COLUMN sms_attempts.client_ref IS
  'The reference this call gave the provider (Vonage client-ref, Infobip messageId, SSL Wireless '
  'csms_id), unique per call: base-36 outbox sequence, r<round>, s<chain step>. Used for status '
  'lookups after an unknown outcome and to match receipts.';

-- Each relay keeps its own circuit breakers in memory and writes them here when they change (and
-- every half minute), so `sms-relay status` can show them. A row is the relay's view, not a vote.
CREATE TABLE sms_provider_circuits (
    relay_id             text        NOT NULL,
    provider             text        NOT NULL,
    state                text        NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer     NOT NULL,
    recent_calls         integer     NOT NULL,
    recent_failures      integer     NOT NULL,
    opened_at            timestamptz,
    retry_at             timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relay_id, provider)
);
COMMENT ON TABLE sms_provider_circuits IS
  'Circuit-breaker state per relay and provider: closed (calls flow), open (skipped until '
  'retry_at), half_open (one probe call decides). Rows of relays that stopped cleanly are removed.';

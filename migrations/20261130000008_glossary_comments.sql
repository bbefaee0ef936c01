-- Column comments for the words that mean different things in different places (README "Glossary").
-- Names stay as they are: the auth backend and analysts use them. In short: a round is one claim of
-- a message and one pass along the provider chain; an attempt is one provider call. So
-- sms_outbox.attempts and sms_attempts.attempt_number count rounds, while sms_attempts rows and the
-- report views' attempts columns count calls. Comments only: no data or behaviour changes.

-- sms_outbox -------------------------------------------------------------------------------------

COMMENT ON COLUMN sms_outbox.state IS
  'Lifecycle state (sms_state). pending: waiting to be claimed (new, a retry, a claim put back, or a '
  'queued resend), due at next_attempt_at; sending: claimed by claimed_by until next_attempt_at (the '
  'lease end); sent: a provider accepted it (sent_at; under relay.on_unknown = assume_sent, may have), '
  'not necessarily delivered; failed, expired, cancelled: ended without any provider accepting it. sent, failed, expired and cancelled set '
  'finished_at. Allowed changes: sms_transition_allowed().';
COMMENT ON COLUMN sms_outbox.attempts IS
  'Rounds so far, not provider calls: each claim adds 1 (a first send, a retry, a re-claim after a '
  'lost lease, a claim put back, a resend), and the value is the number of the latest round. '
  'sms_attempts.attempt_number holds it; the provider calls are the sms_attempts rows. A round that '
  'sends nothing is the last once this reaches retry.max_rounds.';
COMMENT ON COLUMN sms_outbox.next_attempt_at IS
  'pending: when the message becomes due, i.e. its next round may be claimed; sending: when the '
  'claiming relay''s lease runs out. A time for a round, not for a single provider call; '
  'meaningless once the state is final.';
COMMENT ON COLUMN sms_outbox.resends IS
  'Resend rounds queued for this sent message (a receipt said undelivered, failed or expired, or no '
  'final receipt came within receipts.resend_after_ms) and not withdrawn: a waiting resend taken '
  'back by a delivered receipt, a newer message or an operator''s cancel is not counted. Rounds, not '
  'provider calls; at most receipts.max_resends.';
COMMENT ON COLUMN sms_outbox.expires_at IS
  'End of the code''s validity: defaults to the enqueue time + the template''s validity and may not '
  'be later. Nothing is handed to a provider later than relay.expiry_margin_ms before it.';
COMMENT ON COLUMN sms_outbox.purpose IS
  'What the code is for (e.g. login); defaults to the template name. A new message with supersede '
  'set supersedes older ones for the same recipient and purpose.';

-- sms_attempts -----------------------------------------------------------------------------------

COMMENT ON COLUMN sms_attempts.attempt_number IS
  'The round this call belongs to (1, 2, …): sms_outbox.attempts as the claim left it. Not a count '
  'of calls: one round has one row per provider called, told apart by chain_step.';
COMMENT ON COLUMN sms_attempts.chain_step IS
  'The provider''s 1-based position in the configured chain ([[providers]] order), not the order of '
  'the calls in the round: providers skipped (open circuit, no rate-limit token, too little validity '
  'left) leave gaps, and a resend round starts after the provider that did not deliver, so its first '
  'call may have a higher step than a later one.';
COMMENT ON COLUMN sms_attempts.outcome IS
  'How the provider answered this call (sms_outcome), known when the call ends: accepted, '
  'bad_recipient, provider_error, or unknown (the request may have reached the provider). Whether the '
  'phone got the message is delivery_status, which receipts set later.';
COMMENT ON COLUMN sms_attempts.cause IS
  'Why this call was made: first (the first call of round 1); fallback (a later call of the same '
  'round, after the previous call did not accept); retry (the first call of a later round that '
  'is not a resend: after a round that sent nothing, a lost lease, a claim put back, or an '
  'operator''s retry); resend (the first call of a resend round: a receipt said undelivered, failed or '
  'expired, or none came in time; see resend_reason).';
COMMENT ON COLUMN sms_attempts.delivery_status IS
  'What happened after the provider accepted this call (sms_delivery); only accepted calls get one. '
  'NULL until the first receipt; moves forward only (queued, enroute, then a final status). unknown '
  'is set by a receipt or when no final receipt came within receipts.unknown_after_ms (receipt_at '
  'stays NULL), and a later final receipt replaces it. Not the call''s outcome.';
COMMENT ON COLUMN sms_attempts.finished_at IS
  'When this call ended: the answer came, or the call was abandoned (the round''s deadline, or the '
  'relay stopping). Not sms_outbox.finished_at.';
COMMENT ON COLUMN sms_attempts.segments IS
  'SMS parts (segments) the rendered text takes: GSM-7 160 characters in one part, 153 per part when '
  'split; UCS-2 70 / 67. Providers bill per part.';
COMMENT ON COLUMN sms_attempts.relay_id IS
  'The relay (one sms-relay run process, relay.relay_id) that made the call.';

-- Report views: their attempts columns count provider calls ----------------------------------------

COMMENT ON COLUMN sms_report_cost_daily.attempts IS
  'Provider calls (sms_attempts rows), not rounds.';
COMMENT ON COLUMN sms_report_delivery_rate.attempts IS
  'Provider calls (sms_attempts rows), whatever their outcome; not rounds.';
COMMENT ON VIEW sms_report_attempts_per_delivered IS
  'Provider calls (attempts: sms_attempts rows, not rounds) and distinct providers per message that '
  'some call delivered, per UTC day of the message''s first call. Every call of the message counts, '
  'including any after the one that delivered.';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_avg IS
  'Mean provider calls (not rounds) per delivered message (2 decimals).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_p50 IS
  'Median provider calls (not rounds) per delivered message (interpolated).';
COMMENT ON COLUMN sms_report_attempts_per_delivered.attempts_max IS
  'Most provider calls (not rounds) any delivered message took.';

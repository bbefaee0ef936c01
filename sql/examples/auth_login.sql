-- How the auth backend sends a login code: its own OTP row and the SMS intent are written in ONE
-- transaction. If the transaction commits, the relay sends the SMS; if it rolls back, no SMS is
-- ever sent. In application code the literals below are bind parameters.

-- The auth backend's own table (here only so the example runs on its own).
CREATE TABLE IF NOT EXISTS auth_otp (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone      text        NOT NULL,
    purpose    text        NOT NULL,
    code_hash  text        NOT NULL,     -- store a hash, never the code
    expires_at timestamptz NOT NULL,
    sms_id     uuid                      -- the outbox message, for support look-ups
);

-- A login that succeeds: the code is stored and the SMS enqueued together.
BEGIN;
INSERT INTO auth_otp (phone, purpose, code_hash, expires_at, sms_id)
SELECT req.phone, 'login', md5(req.code || ':per-user-salt'), req.expires_at,
       sms_enqueue(
           recipient       => req.phone,
           template        => 'otp',                        -- "Your verification code is {code}. Valid for 10 minutes."
           params          => jsonb_build_object('code', req.code),
           expires_at      => req.expires_at,               -- nothing is sent after this
           idempotency_key => req.request_id,               -- a retried HTTP request cannot send twice
           priority        => 1,
           purpose         => 'login')                      -- a newer login code cancels this one if unsent
  FROM (VALUES ('+8801712345678', '482913', now() + interval '10 minutes', 'login-req-7f3a9c'))
       AS req(phone, code, expires_at, request_id);
COMMIT;

-- A login that fails a later check and rolls back: no OTP row, no SMS, nothing for the relay.
BEGIN;
INSERT INTO auth_otp (phone, purpose, code_hash, expires_at)
VALUES ('+8801812345678', 'login', md5('771204' || ':per-user-salt'), now() + interval '10 minutes');
SELECT sms_enqueue('+8801812345678', 'otp', '{"code": "771204"}', purpose => 'login');
ROLLBACK;

-- How the auth backend sends a login code: its own OTP row and the SMS intent are written in ONE
-- transaction. If the transaction commits, the relay sends the SMS; if it rolls back, no SMS is
-- ever sent. In application code the literals below are bind parameters.
--
-- The code is stored as a keyed hash: HMAC-SHA256 with a secret key the database never stores
-- (a bind parameter from the application's secret store; the literal below stands for it). A
-- plain or salted hash of a 6-digit code is reversed at once by trying all million codes; without
-- the key, a copy of this table gives nothing away. pgcrypto's hmac() is one way to compute it;
-- the application computing it itself is another.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The auth backend's own table (here only so the example runs on its own).
CREATE TABLE IF NOT EXISTS auth_otp (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone      text        NOT NULL,
    purpose    text        NOT NULL,
    code_hash  bytea       NOT NULL,     -- HMAC-SHA256 of the code with the server's key, never the code
    expires_at timestamptz NOT NULL,
    sms_id     uuid                      -- the outbox message, for support look-ups
);

-- A login that succeeds: the code is stored and the SMS enqueued together.
BEGIN;
INSERT INTO auth_otp (phone, purpose, code_hash, expires_at, sms_id)
SELECT req.phone, 'login', hmac(req.code, 'key-from-the-secret-store', 'sha256'), req.expires_at,
       sms_enqueue(
           recipient       => req.phone,
           template        => 'otp',                        -- "Your verification code is {code}. Valid for 10 minutes."
           params          => jsonb_build_object('code', req.code),
           expires_at      => req.expires_at,               -- nothing is sent after this
           idempotency_key => req.request_id,               -- a retried HTTP request cannot send twice
           priority        => 1,
           purpose         => 'login',                      -- a newer login code cancels this one if unsent
           caller          => req.client_ip)                -- counted against the caller budget, never stored
  FROM (VALUES ('+8801712345678', '482913', now() + interval '10 minutes', 'login-req-7f3a9c', '203.0.113.7'))
       AS req(phone, code, expires_at, request_id, client_ip);
COMMIT;

-- A login that fails a later check and rolls back: no OTP row, no SMS, nothing for the relay.
BEGIN;
INSERT INTO auth_otp (phone, purpose, code_hash, expires_at)
VALUES ('+8801812345678', 'login', hmac('771204', 'key-from-the-secret-store', 'sha256'), now() + interval '10 minutes');
SELECT sms_enqueue('+8801812345678', 'otp', '{"code": "771204"}', purpose => 'login');
ROLLBACK;

#!/usr/bin/env bash
# Rescue time: two relays (`sms-relay run`, simulator with 1 s per send so messages sit in flight)
# share a burst, each with at most 1,500 messages in flight, so that the burst takes two rounds
# and each relay holds a second round's messages at the kill; one is SIGKILLed; prints how long after the kill the last message it had claimed
# was accepted through the survivor (database clock), with the lease at its default 60 s (a dead
# relay's holds end with its session, so the lease plays no part).
#
#   cargo build --release && benches/rescue.sh postgres://postgres@127.0.0.1:5432
set -euo pipefail
base=${1:?usage: rescue.sh POSTGRES_URL_WITHOUT_DATABASE}
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/sms-relay"
db="sms_relay_rescue_$$"
dir=$(mktemp -d)
psql "$base/postgres" -qXc "create database $db" >/dev/null
cleanup() {
  kill "${survivor:-}" "${victim:-}" 2>/dev/null || true
  psql "$base/postgres" -qXc "drop database if exists $db with (force)" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
url="$base/$db"
printf '[relay]\nmax_in_flight = 1500\n\n[[providers]]\nname = "sim"\nkind = "simulator"\nlatency_ms = 1000\n' > "$dir/relay.toml"
DATABASE_URL=$url RUST_LOG=warn "$bin" migrate >/dev/null
psql "$url" -qXAt -c "SET sms.lift_budgets = on" -c "SET sms.fictional = on" -c "SELECT count(sms_enqueue('+88018' || lpad(i::text, 9, '0'), 'otp',
    jsonb_build_object('code', '123456'))) FROM generate_series(1, 4000) AS i" >/dev/null
run() {
  DATABASE_URL=$url RUST_LOG=warn SMS_RELAY__WEBHOOKS__LISTEN="" SMS_RELAY__ADMIN__LISTEN="" SMS_RELAY__RELAY__RELAY_ID=$1 \
    "$bin" --config "$dir/relay.toml" run >/dev/null 2>&1 &
}
run victim; victim=$!
run survivor; survivor=$!
sleep 1.5
# What the victim holds (its claim connection's locks), read just before the kill: its holds end with it.
psql "$url" -qXc "create table victim_held as
    select o.id from sms_outbox o
      join pg_locks l on sms_hold_key(o.seq) = l.objid::int8::int4
      join pg_stat_activity a on a.pid = l.pid
     where l.locktype = 'advisory' and l.classid = 1397576497::oid and l.objsubid = 2
       and a.application_name = 'sms-relay victim' and o.state = 'pending'" >/dev/null
kill -9 "$victim"
killed_at=$(psql "$url" -qXAt -c "select now()")
held=$(psql "$url" -qXAt -c "select count(*) from victim_held")
for _ in $(seq 1 600); do
  left=$(psql "$url" -qXAt -c "select count(*) from sms_outbox where id in (select id from victim_held) and state <> 'sent'")
  [ "$left" = 0 ] && break
  sleep 0.1
done
psql "$url" -qXAt -c "
  select 'victim held ' || $held || ' claimed messages at the kill; the last of them was accepted through the survivor '
         || round(extract(epoch from max(a.finished_at) - '$killed_at'::timestamptz)::numeric, 2) || ' s after the kill'
    from sms_attempts a join victim_held h on h.id = a.message_id
   where a.relay_id = 'survivor' and a.outcome = 'accepted'"

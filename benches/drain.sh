#!/usr/bin/env bash
# The drain figure: N OTPs enqueued through sms_enqueue() in one transaction into a fresh database,
# VACUUM ANALYZE, CHECKPOINT, then one `sms-relay run --until-idle` (default settings, the built-in
# simulator) timed from start to exit, with the relay's peak RSS, the WAL written meanwhile and,
# for a server on this host, the CPU time per message of PostgreSQL and of the relay and how much
# of the machine sat idle. Pass a ceiling script (one that prints `…: N msgs/s` last, e.g. a
# pgbench run of a bare claim + complete of the same shape) to run it against the same server
# right before the relay starts and right after it exits, and print the ratio to the mean of the
# two: the machine's speed swings from minute to minute, so the three runs are seconds apart.
#
#   cargo build --release && benches/drain.sh postgres://postgres@127.0.0.1:5432 [CEILING_SCRIPT]
#   SMS_RELAY_BIN=/path/to/another/sms-relay benches/drain.sh …   # the same figure for another build
#   SSLMODE=prefer benches/drain.sh …   # over TLS (the default connects as the ceiling does: no TLS)
#   HISTORY=2000000 benches/drain.sh …  # the same drain with that many finished messages (one
#                                       # delivered attempt each) already in the tables
#   PRE_SQL='DROP INDEX …' benches/drain.sh …  # the same drain after a schema experiment
set -euo pipefail
base=${1:?usage: drain.sh POSTGRES_URL_WITHOUT_DATABASE [CEILING_SCRIPT]}
ceiling=${2:-}
N=${N:-100000}
bin=${SMS_RELAY_BIN:-"$(cd "$(dirname "$0")/.." && pwd)/target/release/sms-relay"}
db="sms_relay_drain_$$"
psql "$base/postgres" -qXc "create database $db" >/dev/null
trap 'psql "$base/postgres" -qXc "drop database if exists $db with (force)" >/dev/null 2>&1' EXIT
url="$base/$db"
DATABASE_URL=$url RUST_LOG=warn "$bin" migrate >/dev/null
# An experiment's schema change (e.g. an index dropped), applied before anything is enqueued.
if [ -n "${PRE_SQL:-}" ]; then psql "$url" -qX -v ON_ERROR_STOP=1 -c "$PRE_SQL" >/dev/null; fi
if [ "${HISTORY:-0}" -gt 0 ]; then
  # Finished history, written directly (triggers off: these rows were never enqueued here).
  psql "$url" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET session_replication_role = replica;
INSERT INTO sms_outbox (seq, state, recipient, template, params, purpose, expires_at, next_attempt_at,
                        attempts, created_at, finished_at, sent_at)
SELECT nextval('sms_outbox_seq'), 'sent', '+8801' || lpad((900000000 + i)::text, 9, '0'), 'otp',
       '{"code": "123456"}', 'login', t + interval '5 minutes', t, 1, t, t, t
  FROM generate_series(1, $HISTORY) AS i, LATERAL (SELECT now() - interval '1 day' + i * interval '1 ms') AS c(t);
INSERT INTO sms_attempts (message_id, attempt_number, chain_step, provider, template, relay_id, started_at,
                          finished_at, outcome, provider_message_id, segments, encoding, client_ref, cause,
                          country, operator, delivery_status, delivered_at, receipt_at)
SELECT id, 1, 1, 'simulator', 'otp', 'history', sent_at, sent_at, 'accepted', 'SIM' || seq, 1, 'gsm7',
       seq || 'r1s1', 'first', 'BD', 'unknown', 'delivered', sent_at + interval '3 s', sent_at + interval '3 s'
  FROM sms_outbox;
SQL
fi
psql "$url" -qXAt -c "SET sms.lift_budgets = on" -c "SET sms.fictional = on" -c "SELECT count(sms_enqueue('+88018' || lpad(i::text, 9, '0'), 'otp',
    jsonb_build_object('code', lpad((i % 1000000)::text, 6, '0')))) FROM generate_series(1, $N) AS i" >/dev/null
psql "$url" -qXc "vacuum analyze" >/dev/null
# The ceiling's rate: the number on the script's last line, `…: N msgs/s`.
ceiling_rate() { "$ceiling" "$base" | tail -1 | sed -n 's/.*: \([0-9]*\) msgs\/s$/\1/p'; }
if [ -n "$ceiling" ]; then top0=$(ceiling_rate); fi
# The setup's dirty pages are flushed before the clock starts, not by a checkpoint during the drain.
psql "$url" -qXc "checkpoint" >/dev/null
wal0=$(psql "$url" -qXAt -c "select pg_current_wal_lsn()")
# Where the machine's time goes (a server on this host only): CPU seconds of all of PostgreSQL's
# processes, the exited ones included (their parent has reaped them), and idle and total seconds of
# the whole machine, from /proc. Prints nothing when the server's processes cannot be read.
server=$(psql "$url" -qXAt -c "select pid from pg_stat_activity where backend_type = 'checkpointer'")
machine() {
  python3 - "$server" <<'PY' 2>/dev/null || true
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def stat(pid):
    text = open(f"/proc/{pid}/stat").read()
    return text[text.rindex(")") + 2:].split()
postmaster = stat(sys.argv[1])[1]
fields = stat(postmaster)
server = sum(int(f) for f in fields[11:15])
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        child = stat(pid)
    except OSError:
        continue
    if child[1] == postmaster:
        server += int(child[11]) + int(child[12])
cpu = [int(f) for f in open("/proc/stat").readline().split()[1:9]]
print(server / hz, (cpu[3] + cpu[4]) / hz, sum(cpu) / hz)
PY
}
read -r server0 idle0 total0 < <(machine)
start=$(date +%s.%N)
DATABASE_URL="$url?sslmode=${SSLMODE:-disable}" RUST_LOG=warn SMS_RELAY__WEBHOOKS__LISTEN="" \
  /usr/bin/time -f "%U %S %M" -o "/tmp/drain-rss-$$" "$bin" run --until-idle
end=$(date +%s.%N)
read -r server1 idle1 total1 < <(machine)
read -r cpu_user cpu_sys rss_kib < <(tail -1 "/tmp/drain-rss-$$"); rm -f "/tmp/drain-rss-$$"
sent=$(psql "$url" -qXAt -c "select count(*) from sms_outbox where state = 'sent'")
wal=$(psql "$url" -qXAt -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
sent=$((sent - ${HISTORY:-0}))
rate=$(python3 -c "print(round($sent / ($end - $start)))")
echo "drain: $sent of $N sent in $(python3 -c "print(round($end - $start, 2))") s: $rate msgs/s, relay peak RSS $(python3 -c "print(round($rss_kib / 1024, 1))") MiB, relay CPU ${cpu_user} s user + ${cpu_sys} s sys, WAL $(python3 -c "print(round($wal / max($sent, 1)))") B/msg (whole server)"
if [ -n "${server1:-}" ] && [ -n "${server0:-}" ]; then
  echo "time: PostgreSQL $(python3 -c "print(round(($server1 - $server0) * 1e6 / max($sent, 1), 1))") us CPU/msg, relay $(python3 -c "print(round(($cpu_user + $cpu_sys) * 1e6 / max($sent, 1), 1))") us CPU/msg, machine idle $(python3 -c "print(round(100 * ($idle1 - $idle0) / ($total1 - $total0)))") %"
fi
if [ -n "$ceiling" ]; then
  top1=$(ceiling_rate)
  echo "ceiling: $top0 msgs/s right before, $top1 right after"
  echo "ratio: $(python3 -c "print(round($rate / (($top0 + $top1) / 2), 2))")"
fi

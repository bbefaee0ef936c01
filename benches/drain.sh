#!/usr/bin/env bash
# The drain figure: N OTPs enqueued through sms_enqueue() in one transaction into a fresh database,
# VACUUM ANALYZE, then one `sms-relay run --until-idle` (default settings, the built-in simulator)
# timed from start to exit, with the relay's peak RSS. Pass a ceiling script (e.g.
# ../shared/bench/ceiling.sh) to run it against the same server right after and print the ratio.
#
#   cargo build --release && benches/drain.sh postgres://postgres@127.0.0.1:5432 [CEILING_SCRIPT]
#   SMS_RELAY_BIN=/path/to/another/sms-relay benches/drain.sh …   # the same figure for another build
#   SSLMODE=prefer benches/drain.sh …   # over TLS (the default connects as the ceiling does: no TLS)
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
psql "$url" -qXAt -c "SELECT count(sms_enqueue('+8801' || lpad(i::text, 9, '0'), 'otp',
    jsonb_build_object('code', lpad((i % 1000000)::text, 6, '0')))) FROM generate_series(1, $N) AS i" >/dev/null
psql "$url" -qXc "vacuum analyze" >/dev/null
start=$(date +%s.%N)
DATABASE_URL="$url?sslmode=${SSLMODE:-disable}" RUST_LOG=warn SMS_RELAY__WEBHOOKS__LISTEN="" \
  /usr/bin/time -f "%U %S %M" -o "/tmp/drain-rss-$$" "$bin" run --until-idle
end=$(date +%s.%N)
read -r cpu_user cpu_sys rss_kib < <(tail -1 "/tmp/drain-rss-$$"); rm -f "/tmp/drain-rss-$$"
sent=$(psql "$url" -qXAt -c "select count(*) from sms_outbox where state = 'sent'")
rate=$(python3 -c "print(round($sent / ($end - $start)))")
echo "drain: $sent of $N sent in $(python3 -c "print(round($end - $start, 2))") s: $rate msgs/s, relay peak RSS $(python3 -c "print(round($rss_kib / 1024, 1))") MiB, relay CPU ${cpu_user} s user + ${cpu_sys} s sys"
if [ -n "$ceiling" ]; then
  line=$("$ceiling" "$base" | tail -1)
  echo "$line"
  top=$(echo "$line" | sed -n 's/.*: \([0-9]*\) msgs\/s$/\1/p')
  echo "ratio: $(python3 -c "print(round($rate / $top, 2))")"
fi

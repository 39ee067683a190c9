#!/usr/bin/env bash
# Weft's benchmark (not a test: it measures and prints, it asserts nothing
# about time; never run by scripts/test.sh or nextest).
#
#   scripts/bench.sh                 # N=3000 requests at C = 1, 8, 32
#   BENCH_N=1000 BENCH_C="1 8" scripts/bench.sh
#
# What it does, all on 127.0.0.1, bounded in count and time:
#  1. builds `weft` and the `loadgen` example in release;
#  2. starts its own throwaway PostgreSQL cluster (the settings of
#     weft-testkit's harness: trust auth, loopback only, fsync off), as the
#     `postgres` user when run as root;
#  3. starts `weft serve` on it; at each C runs loadgen (N create-message
#     POSTs, one thread per worker), then pgbench on the same database with
#     the same SQL as one create-message unit of work (BEGIN; the same
#     UPDATE threads … RETURNING; the same INSERT INTO messages … UNNEST …;
#     COMMIT), prepared protocol, -c C -j 2 -t N/C, one thread per client,
#     latencies from pgbench's per-transaction log; BENCH_REPEAT rounds,
#     interleaved; then a read run (list 20 messages) and an HTTP-floor run
#     (GET /healthz: no token, no database) per C;
#  4. the same Weft runs on SQLite (no pgbench equivalent: SQLite is a
#     library inside Weft's process, there is no server to drive alone);
#  5. prints the tables (medians); every process it started is stopped on
#     exit.
#
# Settings: BENCH_N (requests per run, ≤ 100000), BENCH_C (client counts,
# each ≤ 256), BENCH_REPEAT (rounds, ≤ 10, default 3; the median is
# reported), BENCH_MAX_SECS (cap per loadgen run, ≤ 600), BENCH_KEEP=1
# keeps the work directory (logs, raw JSON lines). Weft runs with its
# defaults (WEFT_POOL_MAX=16, WEFT_LOG=info: one log line per request,
# written to a file) unless WEFT_* variables are set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-3000}
CS=${BENCH_C:-"1 8 32"}
MAX_SECS=${BENCH_MAX_SECS:-120}
REPEAT=${BENCH_REPEAT:-3}
[[ $REPEAT =~ ^[0-9]+$ ]] && ((REPEAT >= 1 && REPEAT <= 10)) || { echo "BENCH_REPEAT must be 1..10" >&2; exit 2; }
[[ $N =~ ^[0-9]+$ ]] && ((N >= 1 && N <= 100000)) || { echo "BENCH_N must be 1..100000" >&2; exit 2; }
[[ $MAX_SECS =~ ^[0-9]+$ ]] && ((MAX_SECS >= 1 && MAX_SECS <= 600)) || { echo "BENCH_MAX_SECS must be 1..600" >&2; exit 2; }
for c in $CS; do
  [[ $c =~ ^[0-9]+$ ]] && ((c >= 1 && c <= 256)) || { echo "BENCH_C values must be 1..256" >&2; exit 2; }
done

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- build --------------------------------------------------------------
log "building weft and loadgen (release)"
cargo build --release --quiet -p weft-server --bin weft --example loadgen
WEFT=$PWD/target/release/weft
LOADGEN=$PWD/target/release/examples/loadgen

PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")")
[[ -x $PGBIN/pgbench && -x $PGBIN/initdb ]] || { echo "no PostgreSQL server binaries / pgbench found" >&2; exit 2; }

# --- cleanup -------------------------------------------------------------
WORK=$(mktemp -d /tmp/weft-bench.XXXXXX)
chmod 755 "$WORK"
WEFT_PID=""
PG_STARTED=""
AS_PG=()
if [[ $(id -u) == 0 ]]; then AS_PG=(runuser -u postgres --); fi

stop_weft() {
  if [[ -n $WEFT_PID ]]; then
    kill -TERM "$WEFT_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$WEFT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$WEFT_PID" 2>/dev/null || true
    wait "$WEFT_PID" 2>/dev/null || true
    WEFT_PID=""
  fi
}
cleanup() {
  stop_weft
  if [[ -n $PG_STARTED ]]; then
    "${AS_PG[@]}" "$PGBIN/pg_ctl" stop -D "$WORK/pgdata" -m fast -w >/dev/null 2>&1 || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- PostgreSQL ----------------------------------------------------------
PGPORT=$(free_port)
log "starting a throwaway PostgreSQL ($("$PGBIN/postgres" --version)) on 127.0.0.1:$PGPORT"
mkdir "$WORK/pgdata"
[[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$WORK/pgdata"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pgdata" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$WORK/initdb.log"
cat >>"$WORK/pgdata/postgresql.conf" <<'EOF'
# weft bench: the settings of weft-testkit's throwaway cluster.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
touch "$WORK/pg.log"
[[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$WORK/pg.log"
"${AS_PG[@]}" "$PGBIN/pg_ctl" start -w -t 60 -D "$WORK/pgdata" -l "$WORK/pg.log" -o "-p $PGPORT" >/dev/null
PG_STARTED=1
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE weft_bench"
PG_URL="postgres://postgres@127.0.0.1:$PGPORT/weft_bench"

# --- Weft ----------------------------------------------------------------
export WEFT_JWT_SECRET
WEFT_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

start_weft() { # $1 = database URL, $2 = log file
  local port
  port=$(free_port)
  WEFT_DATABASE_URL=$1 WEFT_BIND=127.0.0.1:$port "$WEFT" serve >"$2" 2>&1 &
  WEFT_PID=$!
  WEFT_URL=http://127.0.0.1:$port
  for _ in $(seq 1 300); do
    curl -fsS "$WEFT_URL/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$WEFT_PID" 2>/dev/null || { tail -20 "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "weft did not become ready" >&2; exit 1
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

run_loadgen() { # $1 = label, $2 = mode, $3 = C
  local out
  out=$("$LOADGEN" --base-url "$WEFT_URL" --token "$TOKEN" --mode "$2" \
    --concurrency "$3" --requests "$N" --max-secs "$MAX_SECS" --label "$1") || {
    echo "loadgen failed: $out" >&2; exit 1; }
  echo "$out" >>"$RESULTS"
  log "$out"
}

# The SQL of one create-message unit of work, as crates/adapters-postgres/
# src/uow.rs sends it (touch_thread, insert_messages), with the parameters
# pgbench binds: each client has its own thread (as loadgen's workers do),
# the message id is time-ordered like Weft's UUIDv7 ids (msg_ + 32 hex),
# the content is the JSON Weft stores for loadgen's text.
cat >"$WORK/create_message.sql" <<'EOF'
\set delta 1
\set now 1764000000
\set r random(1, 999999999999)
BEGIN;
UPDATE threads SET message_count = message_count + :delta, updated_at = GREATEST(updated_at, :now) WHERE id = 'thread_' || lpad(to_hex(:client_id::int), 32, '0') AND owner = :owner AND deleted_at IS NULL AND message_count + :delta >= 0 RETURNING id;
INSERT INTO messages (id, thread_id, owner, created_at, role, content, attachments, metadata) SELECT u.id, 'thread_' || lpad(to_hex(:client_id::int), 32, '0'), :owner, u.created_at, u.role, u.content::jsonb, u.attachments::jsonb, u.metadata::jsonb FROM UNNEST(ARRAY['msg_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 16, '0') || lpad(to_hex(:r::int8), 16, '0')]::text[], ARRAY[:now]::int8[], ARRAY['user']::text[], ARRAY[:content]::text[], ARRAY['[]']::text[], ARRAY['{}']::text[]) AS u(id, created_at, role, content, attachments, metadata) WHERE EXISTS (SELECT 1 FROM threads WHERE id = 'thread_' || lpad(to_hex(:client_id::int), 32, '0') AND owner = :owner AND deleted_at IS NULL);
COMMIT;
EOF

run_pgbench() { # $1 = C
  local c=$1 j=$(( $1 < 2 ? $1 : 2 )) t=$(( N / $1 )) out dir
  dir=$WORK/pgbench_c$c
  rm -rf "$dir" && mkdir -p "$dir"
  out=$(cd "$dir" && timeout "$MAX_SECS" "$PGBIN/pgbench" -n -M prepared -c "$c" -j "$j" -t "$t" \
    -f "$WORK/create_message.sql" -D owner=pgbench -D "content=$CONTENT" -l --log-prefix=tx \
    -h 127.0.0.1 -p "$PGPORT" -U postgres weft_bench 2>&1) || { echo "pgbench failed: $out" >&2; exit 1; }
  local tps failed
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  # pgbench's per-transaction log: 3rd field = latency in microseconds.
  cat "$dir"/tx.* | awk '{print $3}' | sort -n >"$dir/lat"
  local n p50 p95 p99
  n=$(wc -l <"$dir/lat")
  pct() { sed -n "$(( ($1 * n + 99) / 100 ))p" "$dir/lat"; }
  p50=$(pct 50); p95=$(pct 95); p99=$(pct 99)
  jq -cn --argjson c "$c" --argjson n "$n" --argjson tps "$tps" --argjson failed "${failed:-0}" \
    --argjson p50 "$p50" --argjson p95 "$p95" --argjson p99 "$p99" \
    '{label:"pgbench", mode:"create", concurrency:$c, ok:$n, errors:$failed, rps:$tps,
      p50_ms:($p50/1000), p95_ms:($p95/1000), p99_ms:($p99/1000)}' | tee -a "$RESULTS" >&2
}

log "load before: $(cut -d" " -f1-3 /proc/loadavg)"
log "weft serve on PostgreSQL"
start_weft "$PG_URL" "$WORK/weft-pg.log"
TOKEN=$(WEFT_DATABASE_URL=$PG_URL "$WEFT" token --user bench)
# pgbench's threads: owner 'pgbench', one per client id, beside Weft's.
"${PSQL[@]}" -d weft_bench -c "INSERT INTO threads (id, owner, created_at, updated_at, metadata, tool_resources, title, message_count)
  SELECT 'thread_' || lpad(to_hex(k), 32, '0'), 'pgbench', 1764000000, 1764000000, '{\"bench\":\"pgbench\"}', '{}', NULL, 0
  FROM generate_series(0, 255) AS k"
CONTENT=""
# Weft and pgbench interleaved, C by C, BENCH_REPEAT rounds: a burst of
# background load then hits both sides alike. Weft idles during pgbench.
for rep in $(seq 1 "$REPEAT"); do
  for c in $CS; do
    run_loadgen pg create "$c"
    if [[ -z $CONTENT ]]; then
      # The JSON Weft stored for loadgen's text: pgbench inserts the same.
      CONTENT=$("${PSQL[@]}" -d weft_bench -At -c "SELECT content::text FROM messages WHERE owner = 'bench' LIMIT 1")
    fi
    run_pgbench "$c"
  done
done
for c in $CS; do run_loadgen pg list "$c"; done
# The HTTP floor: GET /healthz (no token check, no database).
for c in $CS; do run_loadgen floor health "$c"; done
stop_weft
"${PSQL[@]}" -d weft_bench -At -c "SELECT 'message_count exact after the runs: ' || bool_and(message_count = (SELECT count(*) FROM messages m WHERE m.thread_id = t.id))::text FROM threads t" >&2

log "weft serve on SQLite"
start_weft "sqlite://$WORK/bench.db" "$WORK/weft-sqlite.log"
TOKEN=$(WEFT_DATABASE_URL="sqlite://$WORK/bench.db" "$WEFT" token --user bench)
for rep in $(seq 1 "$REPEAT"); do
  for c in $CS; do run_loadgen sqlite create "$c"; done
done
for c in $CS; do run_loadgen sqlite list "$c"; done
stop_weft
log "load after: $(cut -d" " -f1-3 /proc/loadavg)"

# --- report --------------------------------------------------------------
# Median of each measure over the rounds, per (label, mode, C).
jq -cs 'def med: sort | .[(length - 1) / 2 | floor];
  group_by([.label, .mode, .concurrency]) | map({label: .[0].label, mode: .[0].mode, concurrency: .[0].concurrency,
    runs: length, errors: (map(.errors) | add),
    rps: (map(.rps) | med), rps_min: (map(.rps) | min), rps_max: (map(.rps) | max),
    p50_ms: (map(.p50_ms) | med), p95_ms: (map(.p95_ms) | med), p99_ms: (map(.p99_ms) | med)}) | .[]' \
  "$RESULTS" >"$WORK/summary.jsonl"
SUMMARY=$WORK/summary.jsonl

echo
echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); load generator, Weft, pgbench and PostgreSQL share them"
echo "N=$N requests per run, median of $REPEAT rounds; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (fsync off); Weft pool ${WEFT_POOL_MAX:-16}, log ${WEFT_LOG:-info}"
echo
echo "create message, PostgreSQL: Weft (HTTP) vs pgbench (the same SQL alone)"
printf '%4s | %10s %10s %7s | %9s %9s %6s | %9s %9s %6s\n' C weft_rps pgb_rps ratio weft_p50 pgb_p50 ratio weft_p95 pgb_p95 ratio
for c in $CS; do
  jq -rs --argjson c "$c" '
    (map(select(.label=="pg" and .mode=="create" and .concurrency==$c))[0]) as $w |
    (map(select(.label=="pgbench" and .concurrency==$c))[0]) as $p |
    [$c, $w.rps, $p.rps, ($w.rps/$p.rps), $w.p50_ms, $p.p50_ms, ($w.p50_ms/$p.p50_ms), $w.p95_ms, $p.p95_ms, ($w.p95_ms/$p.p95_ms)]
    | @tsv' "$SUMMARY" |
    awk -F'\t' '{printf "%4d | %10.0f %10.0f %7.2f | %7.2fms %7.2fms %6.2f | %7.2fms %7.2fms %6.2f\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}'
done
echo "(ratio = Weft / pgbench: below 1 for throughput, above 1 for latency, means Weft is slower)"
echo
echo "all runs (median; rps range over the rounds; SQLite has no pgbench equivalent; list = GET 20 messages; floor = GET /healthz)"
printf '%-8s %-7s %4s %4s | %8s %15s | %9s %9s %9s | %s\n' what mode C runs rps range p50 p95 p99 errors
jq -r '[.label, .mode, .concurrency, .runs, .rps, .rps_min, .rps_max, .p50_ms, .p95_ms, .p99_ms, .errors] | @tsv' "$SUMMARY" |
  awk -F'\t' '{printf "%-8s %-7s %4d %4d | %8.0f %7.0f-%-7.0f | %7.2fms %7.2fms %7.2fms | %d\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}'

#!/usr/bin/env bash
# Weft's benchmark (not a test: it measures and prints, it asserts nothing
# about time; never run by scripts/test.sh or nextest). docs/BENCHMARKS.md
# explains the method and holds the results.
#
#   scripts/bench.sh                                  # the four scenarios, 64 clients, 20 s, 3 rounds
#   BENCH_BASELINE=../bench-base/target/release/weft scripts/bench.sh   # + an older build, interleaved
#   BENCH_BASELINE="old=/path/weft mid=/path/weft2" scripts/bench.sh     # + several, named
#   BENCH_SET=topologies scripts/bench.sh             # plain PostgreSQL vs PgBouncer vs Citus
#   BENCH_SET=topologies BENCH_TOPOLOGIES=bouncer scripts/bench.sh   # plain vs through PgBouncer only
#   BENCH_SET=all BENCH_SECS=10 scripts/bench.sh
#   BENCH_SECS=2 BENCH_ROUNDS=1 BENCH_TRACE=0 scripts/bench.sh          # smoke run (~1 min after the build)
#
# What it does, all on 127.0.0.1, bounded in count and time:
#  1. builds `weft` and the `loadgen` example in release;
#  2. starts its own throwaway PostgreSQL (fsync and synchronous_commit on);
#  3. starts `weft serve` on a database of its own, creates one thread and
#     message through the API (whose stored JSON the loader copies), and
#     loads BENCH_USERS users × BENCH_THREADS threads × BENCH_MESSAGES
#     messages with SQL (either schema: owner-keyed or the older id-keyed);
#     one token per user, minted with `weft token`;
#  4. per round, per scenario — create message, list messages (20), get
#     thread, mixed 70/20/10 — runs loadgen (each request a random user's
#     own thread) then pgbench on the same database with the SQL a
#     well-written server needs (create: BEGIN; UPDATE threads; INSERT
#     INTO messages; COMMIT; list and get: one SELECT; mixed: the three
#     scripts weighted @70/@20/@10), same client count, same duration;
#     records throughput, latency percentiles, errors, CPU per request of
#     Weft, PostgreSQL and the client (/proc), Weft's VmRSS and VmHWM, and
#     the load average before and after;
#  5. then, outside the timed rounds: round trips per request (strace of
#     Weft and of pgbench, C = 1) and, with BENCH_PERF=1, a perf profile of
#     Weft under the get-thread scenario;
#  6. prints the tables (medians over rounds, min–max) and the invariant
#     check (message_count exact); exits 1 if any request failed.
#
# Settings (all optional):
#   BENCH_SET        main (default) | topologies | all
#   BENCH_TOPOLOGIES with topologies/all: which besides plain PostgreSQL, any of
#                    "nocache bouncer citus" (the default: all three)
#   BENCH_SCENARIOS  which of "create list get mixed floor" the main set runs
#                    (default: all five; floor is GET /healthz, Weft only: the
#                    HTTP floor, what a request costs with no token and no database)
#   BENCH_SECS       timed seconds per run (1–600, default 20)
#   BENCH_C          concurrent clients (1–256, default 64)
#   BENCH_ROUNDS     rounds, interleaved (1–10, default 3; medians reported)
#   BENCH_USERS, BENCH_THREADS, BENCH_MESSAGES   data (default 100 × 10 × 20)
#   BENCH_BASELINE   other `weft` binaries (e.g. older builds), space-separated,
#                    each PATH or NAME=PATH (NAME: a-z, 0-9, _): benchmarked
#                    in the same rounds, each on its own database
#   BENCH_TRACE      1 (default) counts round trips with strace; 0 skips
#   BENCH_PERF       1 (or get): perf profile of Weft under get thread; list,
#                    create or mixed: under that scenario
#   BENCH_KEEP       1: keep the work directory (logs, raw JSON, pgbench logs)
#   WEFT_*           passed through to every `weft serve` (e.g. WEFT_POOL_MAX)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=bench
source scripts/bench-lib.sh

SET=${BENCH_SET:-main}
SECS=${BENCH_SECS:-20}
C=${BENCH_C:-64}
ROUNDS=${BENCH_ROUNDS:-3}
USERS=${BENCH_USERS:-100}
THREADS=${BENCH_THREADS:-10}
MESSAGES=${BENCH_MESSAGES:-20}
BASELINE=${BENCH_BASELINE:-}
TRACE=${BENCH_TRACE:-1}
PERF=${BENCH_PERF:-0}
case $SET in main | topologies | all) ;; *) echo "BENCH_SET must be main, topologies or all" >&2; exit 2 ;; esac
TOPO_LIST=${BENCH_TOPOLOGIES:-nocache bouncer citus}
for t in $TOPO_LIST; do
  case $t in nocache | bouncer | citus) ;; *) echo "BENCH_TOPOLOGIES: '$t' is not one of nocache, bouncer, citus" >&2; exit 2 ;; esac
done
SCEN_LIST=${BENCH_SCENARIOS:-create list get mixed floor}
for t in $SCEN_LIST; do
  case $t in create | list | get | mixed | floor) ;; *) echo "BENCH_SCENARIOS: '$t' is not one of create, list, get, mixed, floor" >&2; exit 2 ;; esac
done
case $PERF in 0 | 1 | get | list | create | mixed) ;; *) echo "BENCH_PERF must be 0, 1, get, list, create or mixed" >&2; exit 2 ;; esac
want_topo() { [[ " $TOPO_LIST " == *" $1 "* ]]; }
int_in() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || { echo "$1 must be $3..$4" >&2; exit 2; }; }
int_in BENCH_SECS "$SECS" 1 600
int_in BENCH_C "$C" 1 256
int_in BENCH_ROUNDS "$ROUNDS" 1 10
int_in BENCH_USERS "$USERS" 1 10000
int_in BENCH_THREADS "$THREADS" 1 1000
int_in BENCH_MESSAGES "$MESSAGES" 1 1000
((USERS * THREADS * MESSAGES <= 10000000)) || { echo "at most 10^7 messages" >&2; exit 2; }
declare -A BASE_BIN
BASE_NAMES=()
for entry in $BASELINE; do
  name=base
  ((${#BASE_NAMES[@]} == 0)) || name=base$((${#BASE_NAMES[@]} + 1))
  path=$entry
  if [[ $entry == *=* ]]; then name=${entry%%=*}; path=${entry#*=}; fi
  [[ $name =~ ^[a-z0-9_]+$ && $name != cur && $name != nocache && $name != bouncer && $name != citus ]] ||
    { echo "BENCH_BASELINE: bad name '$name' (a-z, 0-9, _; not cur, nocache, bouncer, citus)" >&2; exit 2; }
  [[ -x $path ]] || { echo "BENCH_BASELINE: $path is not an executable" >&2; exit 2; }
  BASE_NAMES+=("$name")
  BASE_BIN[$name]=$(readlink -f "$path")
done
CAP=$((SECS + 120)) # wall-clock cap of one client run (setup and warm-up included)

bench_tools
WORK=$(mktemp -d /tmp/weft-bench.XXXXXX)
chmod 755 "$WORK"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

log "load before build: $(loadavg)"
log "building weft and loadgen (release)"
cargo build --release --quiet -p weft-server --bin weft --example loadgen
WEFT_BIN_cur=$PWD/target/release/weft
# What was built (the report is printed at the end, when the tree may have moved on).
TREE_DESC="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock Cargo.toml || echo ', modified')"
LOADGEN=$PWD/target/release/examples/loadgen
export WEFT_JWT_SECRET
WEFT_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# --- systems -------------------------------------------------------------
# A "system" is one Weft on one database plus the pgbench reference on the
# same database: LABEL → binary, database URL, port, clusters, schema.
declare -A SYS_PORT SYS_WPORT SYS_DB SYS_PGBPORT SYS_CLUSTERS SYS_SCHEMA SYS_PGBMODE SYS_CONTENT SYS_ATT SYS_MMETA
SYSTEMS=()

# setup_system LABEL BINARY PORT DB [PGBENCH_PORT] [PGBENCH_MODE] [WEFT_URL_OVERRIDE] [VAR=VALUE…]
setup_system() {
  local label=$1 bin=$2 port=$3 db=$4 bport=${5:-$3} bmode=${6:-prepared} wurl=${7:-}
  shift 7 || shift $#
  local url=${wurl:-postgres://postgres@127.0.0.1:$port/$db}
  # The port Weft itself talks to (PgBouncer's for the bouncer system).
  local wport=${url##*127.0.0.1:}
  wport=${wport%%/*}
  printf -v "WEFT_BIN_$label" '%s' "$bin"
  log "[$label] weft serve on $url $*"
  weft_start "$label" "$bin" "$url" "$@"
  reference_rows "$label" "$port" "$db"
  SYS_SCHEMA[$label]=$(schema_of "$port" "$db")
  log "[$label] loading $USERS × $THREADS × $MESSAGES (${SYS_SCHEMA[$label]} schema) with SQL"
  local t0=$SECONDS
  load_grid "$port" "$db" "${SYS_SCHEMA[$label]}" "$USERS" "$THREADS" "$MESSAGES"
  log "[$label] loaded in $((SECONDS - t0)) s; minting $USERS tokens"
  grid_targets "$bin" "$url" "$USERS" "$THREADS" "$WORK/targets-$label.tsv"
  SYS_PORT[$label]=$port
  SYS_WPORT[$label]=$wport
  SYS_DB[$label]=$db
  SYS_PGBPORT[$label]=$bport
  SYS_PGBMODE[$label]=$bmode
  SYS_CONTENT[$label]=$REF_CONTENT
  SYS_ATT[$label]=$REF_ATT
  SYS_MMETA[$label]=$REF_MMETA
  SYSTEMS+=("$label")
  pgbench_scripts "$label"
}

# The pgbench reference scripts of a system, in its schema. Each picks a
# random user u and one of u's threads t, like loadgen; ids are built
# from them the way the loader built them. create: the naive four
# statements; get and list: one SELECT each (list folds the thread's
# liveness check in, and fetches 21 rows: the page and has_more).
pgbench_scripts() {
  local label=$1 dir=$WORK/pgbench-$1
  mkdir -p "$dir"
  local pick="\\set u random(0, $((USERS - 1)))
\\set t random(0, $((THREADS - 1)))"
  local owner="'u' || :u"
  local tid="'thread_00000000' || lpad(to_hex(:u::int8), 12, '0') || lpad(to_hex(:t::int8), 12, '0')"
  local mid="'msg_' || lpad(to_hex(:r1::int8), 16, '0') || lpad(to_hex(:r2::int8), 16, '0')"
  local newest="" keys="id, thread_id, owner" vals="$mid, $tid, $owner"
  if [[ ${SYS_SCHEMA[$label]} == owner-keyed ]]; then
    newest=", newest_message_id = $mid"
    keys="owner, thread_id, id"
    vals="$owner, $tid, $mid"
  fi
  # r1 keeps message ids below the ones Weft mints (UUIDv7: time first),
  # so Weft's next append in the thread stays above its newest.
  cat >"$dir/create.sql" <<EOF
$pick
\\set r1 random(17592186044416, 281474976710655)
\\set r2 random(0, 4611686018427387903)
BEGIN;
UPDATE threads SET message_count = message_count + 1, updated_at = GREATEST(updated_at, :now)$newest WHERE owner = $owner AND id = $tid AND deleted_at IS NULL RETURNING id;
INSERT INTO messages ($keys, created_at, role, content, attachments, metadata) VALUES ($vals, :now, 'user', :content, :att, :mmeta);
COMMIT;
EOF
  cat >"$dir/get.sql" <<EOF
$pick
SELECT t.id, t.created_at, t.updated_at, t.metadata::text AS metadata, t.tool_resources::text AS tool_resources, t.title, t.message_count FROM threads t WHERE t.owner = $owner AND t.id = $tid AND t.deleted_at IS NULL;
EOF
  cat >"$dir/list.sql" <<EOF
$pick
SELECT m.id, m.thread_id, m.created_at, m.role, m.content::text AS content, m.attachments::text AS attachments, m.metadata::text AS metadata FROM messages m WHERE m.owner = $owner AND m.thread_id = $tid AND m.deleted_at IS NULL AND EXISTS (SELECT 1 FROM threads t WHERE t.owner = $owner AND t.id = $tid AND t.deleted_at IS NULL) ORDER BY m.id DESC LIMIT 21;
EOF
}

# --- one measured run ----------------------------------------------------
# Common record: CPU per request (µs) of Weft, PostgreSQL (all clusters of
# the system) and the client; loads before/after.
record() { # JSON fields… (jq -n args) → appends to $RESULTS
  jq -cn "$@" | tee -a "$RESULTS" >&2
}

# run_weft SET TOPO LABEL SCENARIO ROUND
run_weft() {
  local set=$1 topo=$2 label=$3 scen=$4 round=$5 mode=$4 pid_var="WEFT_PID_$3" url_var="WEFT_URL_$3"
  [[ $scen == floor ]] && mode=health
  local pid=${!pid_var} l0 w0 p0 out rc=0 w1 p1 l1
  l0=$(loadavg)
  w0=$(proc_ticks "$pid")
  p0=$(pg_cpu_ticks ${SYS_CLUSTERS[$label]})
  out=$("$LOADGEN" --base-url "${!url_var}" --targets "$WORK/targets-$label.tsv" --mode "$mode" \
    --concurrency "$C" --duration-secs "$SECS" --max-secs "$CAP" --label "$label") || rc=$?
  w1=$(proc_ticks "$pid")
  p1=$(pg_cpu_ticks ${SYS_CLUSTERS[$label]})
  l1=$(loadavg)
  [[ -n $out ]] || out='{"ok":0,"errors":1,"rps":0,"warmup":0}'
  [[ $rc == 0 ]] || log "loadgen exited $rc: $out"
  record --argjson r "$out" --arg set "$set" --arg topo "$topo" --arg sys "$label" --arg scen "$scen" \
    --argjson round "$round" --argjson w "$((w1 - w0))" --argjson p "$((p1 - p0))" \
    --argjson rss "$(vm_kib "$pid" VmRSS)" --argjson hwm "$(vm_kib "$pid" VmHWM)" \
    --arg l0 "$l0" --arg l1 "$l1" '
    ($r.ok + $r.warmup) as $n |
    {set: $set, topo: $topo, sys: $sys, client: "weft", scen: $scen, round: $round,
     rps: $r.rps, p50_ms: $r.p50_ms, p95_ms: $r.p95_ms, p99_ms: $r.p99_ms, ok: $r.ok, errors: $r.errors,
     error_statuses: $r.error_statuses, kinds: $r.kinds,
     weft_cpu_us: (if $n > 0 then $w * 10000 / $n else null end),
     pg_cpu_us: (if $n > 0 then $p * 10000 / $n else null end),
     client_cpu_us: (if $n > 0 and $r.client_cpu_ms != null then $r.client_cpu_ms * 1000 / $r.ok else null end),
     rss_kib: $rss, hwm_kib: $hwm, load_before: $l0, load_after: $l1}'
}

# run_pgbench SET TOPO LABEL SCENARIO ROUND
run_pgbench() {
  local set=$1 topo=$2 label=$3 scen=$4 round=$5
  local dir=$WORK/pgbench-$label/run-$scen-$round-$topo files=() rc=0 out l0 l1 p0 p1
  local sdir=$WORK/pgbench-$label
  case $scen in
    create) files=(-f "$sdir/create.sql") ;;
    list) files=(-f "$sdir/list.sql") ;;
    get) files=(-f "$sdir/get.sql") ;;
    mixed) files=(-f "$sdir/create.sql@70" -f "$sdir/list.sql@20" -f "$sdir/get.sql@10") ;;
  esac
  mkdir -p "$dir"
  l0=$(loadavg)
  local n0
  n0=$(pg_children ${SYS_CLUSTERS[$label]})
  p0=$(pg_cpu_ticks ${SYS_CLUSTERS[$label]})
  out=$(cd "$dir" && timeout "$CAP" /usr/bin/time -f '%U %S' -o "$dir/cpu" \
    "$PGBIN/pgbench" -n -M "${SYS_PGBMODE[$label]}" -c "$C" -j "$(( C < 2 ? C : 2 ))" -T "$SECS" "${files[@]}" \
    -D now="$(date +%s)" -D content="${SYS_CONTENT[$label]}" -D att="${SYS_ATT[$label]}" -D mmeta="${SYS_MMETA[$label]}" \
    -l --log-prefix=tx -h 127.0.0.1 -p "${SYS_PGBPORT[$label]}" -U postgres "${SYS_DB[$label]}" 2>&1) || rc=$?
  # pgbench's backends exit with it: count their CPU once reaped.
  pg_wait_reaped "$n0" ${SYS_CLUSTERS[$label]}
  p1=$(pg_cpu_ticks ${SYS_CLUSTERS[$label]})
  l1=$(loadavg)
  echo "$out" >"$dir/out"
  [[ $rc == 0 ]] || log "pgbench exited $rc: $(tail -3 <<<"$out")"
  local tps failed n client_s
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  client_s=$(awk '{print $1 + $2}' "$dir/cpu" 2>/dev/null || echo 0)
  # pgbench's per-transaction log: 3rd field latency (µs), 4th the script.
  cat "$dir"/tx.* 2>/dev/null | awk '{print $3, $4}' >"$dir/lat"
  n=$(wc -l <"$dir/lat")
  local pcts
  pcts=$(sort -n "$dir/lat" | awk -v n="$n" 'BEGIN{split("50 95 99", p, " ")}
    {v[NR]=$1} END {for (i = 1; i <= 3; i++) {r = int((p[i] * n + 99) / 100); if (r < 1) r = 1; printf "%s ", (n ? v[r] / 1000 : "null")}}')
  local kinds
  kinds=$(awk '{print $2, $1}' "$dir/lat" | sort -k1,1n -k2,2n | awk -v secs="$SECS" '
    {k[$1]++; v[$1, k[$1]] = $2}
    END {printf "{"; sep = ""; split("create list get", name, " ");
      for (s in k) { nn = k[s]; r50 = int((50 * nn + 99) / 100); r99 = int((99 * nn + 99) / 100);
        printf "%s\"%s\":{\"ok\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f}", sep, name[s + 1], nn, v[s, r50] / 1000, v[s, r99] / 1000; sep = "," }
      printf "}"}')
  [[ $scen == mixed ]] || kinds='{}'
  read -r p50 p95 p99 <<<"$pcts"
  record --arg set "$set" --arg topo "$topo" --arg sys "$label" --arg scen "$scen" --argjson round "$round" \
    --argjson tps "${tps:-0}" --argjson n "$n" --argjson failed "$(( ${failed:-0} + (rc != 0) ))" \
    --argjson p50 "${p50:-null}" --argjson p95 "${p95:-null}" --argjson p99 "${p99:-null}" \
    --argjson p "$((p1 - p0))" --argjson cs "${client_s:-0}" --argjson kinds "$kinds" \
    --arg l0 "$l0" --arg l1 "$l1" '
    {set: $set, topo: $topo, sys: $sys, client: "pgbench", scen: $scen, round: $round,
     rps: $tps, p50_ms: $p50, p95_ms: $p95, p99_ms: $p99, ok: $n, errors: $failed, kinds: $kinds,
     weft_cpu_us: null, pg_cpu_us: (if $n > 0 then $p * 10000 / $n else null end),
     client_cpu_us: (if $n > 0 then $cs * 1000000 / $n else null end),
     load_before: $l0, load_after: $l1}'
}

# --- PostgreSQL and the systems -----------------------------------------
pg_start pg
MAIN_PORT=$PG_PORT
MAIN_DATA=$PG_DATA
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$MAIN_PORT (fsync on, synchronous_commit on)"

if [[ $SET == main || $SET == all ]]; then
  psql_at "$MAIN_PORT" postgres -c "CREATE DATABASE weft_cur"
  SYS_CLUSTERS[cur]=$MAIN_DATA
  setup_system cur "$WEFT_BIN_cur" "$MAIN_PORT" weft_cur
  for b in "${BASE_NAMES[@]}"; do
    psql_at "$MAIN_PORT" postgres -c "CREATE DATABASE weft_$b"
    SYS_CLUSTERS[$b]=$MAIN_DATA
    setup_system "$b" "${BASE_BIN[$b]}" "$MAIN_PORT" "weft_$b"
  done
fi

TOPOS=()
if [[ $SET == topologies || $SET == all ]]; then
  # plain: Weft straight on PostgreSQL (its defaults: named statements cached).
  if [[ -z ${SYS_PORT[cur]:-} ]]; then
    psql_at "$MAIN_PORT" postgres -c "CREATE DATABASE weft_cur"
    SYS_CLUSTERS[cur]=$MAIN_DATA
    setup_system cur "$WEFT_BIN_cur" "$MAIN_PORT" weft_cur
  fi
  TOPOS+=(cur)
  # nocache: the same, with WEFT_PG_STATEMENT_CACHE=off (what PgBouncer
  # needs), to separate the statement cache's share from the pooler's.
  if want_topo nocache; then
    psql_at "$MAIN_PORT" postgres -c "CREATE DATABASE weft_nocache"
    SYS_CLUSTERS[nocache]=$MAIN_DATA
    setup_system nocache "$WEFT_BIN_cur" "$MAIN_PORT" weft_nocache "$MAIN_PORT" prepared "" WEFT_PG_STATEMENT_CACHE=off
    TOPOS+=(nocache)
  fi
  if want_topo bouncer; then
    # pgbouncer: our own PgBouncer, transaction mode, on loopback, as the
    # postgres user (never the system service).
    command -v pgbouncer >/dev/null || die "pgbouncer is not installed: apt-get update && apt-get install -y pgbouncer"
    psql_at "$MAIN_PORT" postgres -c "CREATE DATABASE weft_bouncer"
    BOUNCER_PORT=$(free_port)
    mkdir -p "$WORK/pgbouncer"
    printf '"postgres" ""\n' >"$WORK/pgbouncer/userlist.txt"
    cat >"$WORK/pgbouncer/pgbouncer.ini" <<EOF
[databases]
weft_bouncer = host=127.0.0.1 port=$MAIN_PORT dbname=weft_bouncer user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = transaction
max_client_conn = 400
default_pool_size = $C
logfile = $WORK/pgbouncer/pgbouncer.log
pidfile = $WORK/pgbouncer/pgbouncer.pid
EOF
    [[ ${#AS_PG[@]} -gt 0 ]] && chown -R postgres: "$WORK/pgbouncer"
    "${AS_PG[@]}" pgbouncer "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer/stdout" 2>&1 &
    BENCH_PIDS+=($!)
    BOUNCER_PID=$!
    for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$BOUNCER_PORT") 2>/dev/null && break; sleep 0.1; done
    log "PgBouncer $(pgbouncer --version | head -1 | awk '{print $2}') on 127.0.0.1:$BOUNCER_PORT (transaction mode, pool $C)"
    SYS_CLUSTERS[bouncer]=$MAIN_DATA
    # pgbench through PgBouncer 1.18 cannot keep named statements in
    # transaction mode: -M extended (unnamed, one round trip per statement).
    setup_system bouncer "$WEFT_BIN_cur" "$MAIN_PORT" weft_bouncer "$BOUNCER_PORT" extended \
      "postgres://postgres@127.0.0.1:$BOUNCER_PORT/weft_bouncer" WEFT_PG_STATEMENT_CACHE=off
    TOPOS+=(bouncer)
  fi
  if want_topo citus; then
    # citus: coordinator + 2 workers, the same settings, citus preloaded.
    [[ -f $PGBIN/../lib/citus.so ]] ||
      die "citus.so is not installed (see ../shared/citus/README.md)"
    CITUS_DATA=()
    CITUS_PORTS=()
    for n in coord w1 w2; do
      pg_start "citus-$n" "shared_preload_libraries = 'citus'"
      CITUS_DATA+=("$PG_DATA")
      CITUS_PORTS+=("$PG_PORT")
    done
    citus_db() { # (re)creates weft_citus on every node, the extension on every node listed
      local p
      for p in "${CITUS_PORTS[@]}"; do
        psql_at "$p" postgres -c "DROP DATABASE IF EXISTS weft_citus WITH (FORCE)" -c "CREATE DATABASE weft_citus"
      done
      for p in "$@"; do psql_at "$p" weft_citus -c "CREATE EXTENSION citus"; done
    }
    citus_nodes() {
      psql_at "${CITUS_PORTS[0]}" weft_citus -c "SELECT citus_set_coordinator_host('127.0.0.1', ${CITUS_PORTS[0]})" \
        -c "SELECT citus_add_node('127.0.0.1', ${CITUS_PORTS[1]})" -c "SELECT citus_add_node('127.0.0.1', ${CITUS_PORTS[2]})" >/dev/null
    }
    citus_db "${CITUS_PORTS[@]}"
    citus_nodes
    CITUS_URL="postgres://postgres@127.0.0.1:${CITUS_PORTS[0]}/weft_citus"
    # Weft distributes its tables itself at migrate when the extension is
    # there. If that fails, the bench does the same steps itself, one
    # statement at a time, and says so: Citus 13.2 refuses Weft 0.1's
    # multi-statement distribution string ("cannot insert multiple commands
    # into a prepared statement": the ADD FOREIGN KEY is propagated to the
    # workers with the whole query string).
    CITUS_BY=weft
    if ! WEFT_DATABASE_URL=$CITUS_URL "$WEFT_BIN_cur" migrate >"$WORK/citus-migrate.log" 2>&1; then
      CITUS_BY=bench
      log "WARNING: weft migrate failed on Citus: $(grep -o 'error returned from database: [^:]*' "$WORK/citus-migrate.log" | head -1)"
      log "WARNING: distributing the tables with the bench's own statements (Weft's plan, one statement at a time)"
      citus_db "${CITUS_PORTS[@]:1}"
      WEFT_DATABASE_URL=$CITUS_URL "$WEFT_BIN_cur" migrate >>"$WORK/citus-migrate.log" 2>&1 || die "weft migrate on the coordinator without citus"
      psql_at "${CITUS_PORTS[0]}" weft_citus -c "CREATE EXTENSION citus"
      citus_nodes
      psql_at "${CITUS_PORTS[0]}" weft_citus -c "BEGIN" -c "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'" \
        -c "ALTER TABLE messages DROP CONSTRAINT messages_thread_fkey" \
        -c "SELECT create_distributed_table('owners', 'owner')" \
        -c "SELECT create_distributed_table('threads', 'owner', colocate_with => 'owners')" \
        -c "SELECT create_distributed_table('messages', 'owner', colocate_with => 'owners')" \
        -c "SELECT create_distributed_table('idempotency', 'owner', colocate_with => 'owners')" \
        -c "ALTER TABLE messages ADD CONSTRAINT messages_thread_fkey FOREIGN KEY (owner, thread_id) REFERENCES threads (owner, id)" \
        -c "COMMIT" >/dev/null
    fi
    record --arg by "$CITUS_BY" '{diag: "citus", distributed_by: $by}'
    log "Citus $(psql_at "${CITUS_PORTS[0]}" weft_citus -At -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'"): coordinator 127.0.0.1:${CITUS_PORTS[0]}, workers :${CITUS_PORTS[1]} :${CITUS_PORTS[2]}; tables distributed by $CITUS_BY"
    SYS_CLUSTERS[citus]="${CITUS_DATA[*]}"
    setup_system citus "$WEFT_BIN_cur" "${CITUS_PORTS[0]}" weft_citus
    psql_at "${CITUS_PORTS[0]}" weft_citus -At -c "SELECT 'citus: distributed tables: ' || string_agg(logicalrelid::text, ', ') FROM pg_dist_partition" >&2
    TOPOS+=(citus)
  fi
fi

# --- the rounds ----------------------------------------------------------
# Interleaved: every round runs every scenario on every system (Weft, then
# pgbench), so a burst of background load hits all alike.
MAIN_SYS=()
if [[ $SET == main || $SET == all ]]; then
  MAIN_SYS=(cur)
  MAIN_SYS+=("${BASE_NAMES[@]}")
fi
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS (load $(loadavg))"
  for scen in $SCEN_LIST; do
    for s in "${MAIN_SYS[@]}"; do
      run_weft main plain "$s" "$scen" "$round"
      [[ $scen == floor ]] || run_pgbench main plain "$s" "$scen" "$round"
    done
  done
  for scen in create list get; do
    for s in "${TOPOS[@]}"; do
      run_weft topologies "$s" "$s" "$scen" "$round"
      [[ $s == nocache ]] || run_pgbench topologies "$s" "$s" "$scen" "$round"
    done
  done
done

# --- diagnostics (outside the timed rounds) -----------------------------
# Round trips: strace of Weft (and of pgbench) while C = 1 client sends
# TRACE_N requests of one kind; counts the sends to PostgreSQL per request
# and shows the message types of one request.
TRACE_N=200
trace_weft() { # LABEL KIND
  local label=$1 kind=$2 pid_var="WEFT_PID_$1" url_var="WEFT_URL_$1" spid f=$WORK/strace-$1-$2
  strace -f -qq -yy -s 48 -e trace=sendto,sendmsg,write,writev -p "${!pid_var}" -o "$f" 2>/dev/null &
  spid=$!
  sleep 1
  "$LOADGEN" --base-url "${!url_var}" --targets "$WORK/targets-$label.tsv" --mode "$kind" \
    --concurrency 1 --requests "$TRACE_N" --warmup 0 --max-secs 120 >/dev/null || true
  sleep 0.5
  kill -INT "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  local port=${SYS_WPORT[$label]} pg http
  pg=$(grep -c -- "->127.0.0.1:$port\]" "$f" || true)
  http=$(grep -v -- "->127.0.0.1:$port\]" "$f" | grep -c 'TCP:\[127.0.0.1:[0-9]*->127.0.0.1:[0-9]*\]' || true)
  # The PostgreSQL message types of each send: the first byte, and every
  # further message start strace shows within the first 48 bytes.
  local sample
  sample=$(grep -- "->127.0.0.1:$port\]" "$f" | tail -n 12 | sed -E 's/.*\]>, "(.)(.{0,20}).*/\1/' | tr '\n' ' ')
  record --arg sys "$label" --arg kind "$kind" --argjson n "$TRACE_N" --argjson pg "$pg" --argjson http "$http" \
    --arg sample "$sample" \
    '{diag: "roundtrips", sys: $sys, client: "weft", scen: $kind, per_request_pg_sends: ($pg / $n),
      per_request_http_sends: ($http / $n), last_sends_first_bytes: $sample}'
}
trace_pgbench() { # LABEL KIND
  local label=$1 kind=$2 f=$WORK/strace-pgbench-$1-$2 sdir=$WORK/pgbench-$1
  local n=$TRACE_N
  strace -f -qq -e trace=sendto,sendmsg,write -o "$f" \
    "$PGBIN/pgbench" -n -M "${SYS_PGBMODE[$label]}" -c 1 -j 1 -t "$n" -f "$sdir/$kind.sql" \
    -D now="$(date +%s)" -D content="${SYS_CONTENT[$label]}" -D att="${SYS_ATT[$label]}" -D mmeta="${SYS_MMETA[$label]}" \
    -h 127.0.0.1 -p "${SYS_PGBPORT[$label]}" -U postgres "${SYS_DB[$label]}" >/dev/null 2>&1 || true
  # The connection's start-up exchange cancels out: the sends of a run
  # of 2n transactions minus those of a run of n, divided by n.
  local a b
  a=$(grep -c 'sendto' "$f" || true)
  strace -f -qq -e trace=sendto,sendmsg,write -o "$f.2" \
    "$PGBIN/pgbench" -n -M "${SYS_PGBMODE[$label]}" -c 1 -j 1 -t "$((2 * n))" -f "$sdir/$kind.sql" \
    -D now="$(date +%s)" -D content="${SYS_CONTENT[$label]}" -D att="${SYS_ATT[$label]}" -D mmeta="${SYS_MMETA[$label]}" \
    -h 127.0.0.1 -p "${SYS_PGBPORT[$label]}" -U postgres "${SYS_DB[$label]}" >/dev/null 2>&1 || true
  b=$(grep -c 'sendto' "$f.2" || true)
  record --arg sys "$label" --arg kind "$kind" --argjson per "$(( (b - a) ))" --argjson n "$n" \
    '{diag: "roundtrips", sys: $sys, client: "pgbench", scen: $kind, per_request_pg_sends: ($per / $n)}'
}
# Every system once (cur may be both a main system and the plain topology).
TRACED=()
for s in "${MAIN_SYS[@]}" "${TOPOS[@]}"; do
  [[ " ${TRACED[*]} " == *" $s "* ]] || TRACED+=("$s")
done
if [[ $TRACE == 1 ]]; then
  command -v strace >/dev/null || die "strace is needed for BENCH_TRACE=1 (apt-get install -y strace), or set BENCH_TRACE=0"
  log "round trips: strace, C = 1, $TRACE_N requests per kind"
  for s in "${TRACED[@]}"; do
    for kind in create list get; do trace_weft "$s" "$kind"; done
    [[ $s == nocache ]] && continue
    for kind in create list get; do trace_pgbench "$s" "$kind"; done
  done
fi

if [[ $PERF != 0 ]]; then
  pmode=$PERF
  [[ $pmode == 1 ]] && pmode=get
  s=${MAIN_SYS[0]:-cur}
  pid_var="WEFT_PID_$s"
  url_var="WEFT_URL_$s"
  log "perf: profiling weft ($s) under $pmode, C = $C, $SECS s"
  perf record -e cpu-clock -F 999 -p "${!pid_var}" -o "$WORK/perf-$pmode.data" -- sleep "$SECS" >/dev/null 2>&1 &
  perf_pid=$!
  "$LOADGEN" --base-url "${!url_var}" --targets "$WORK/targets-$s.tsv" --mode "$pmode" \
    --concurrency "$C" --duration-secs "$SECS" --max-secs "$CAP" --label perf >/dev/null || true
  wait "$perf_pid" || true
  perf report -i "$WORK/perf-$pmode.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 >"$WORK/perf-$pmode-dso.txt" || true
  perf report -i "$WORK/perf-$pmode.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$WORK/perf-$pmode-sym.txt" || true
  echo "perf, weft under $pmode: by shared object" && cat "$WORK/perf-$pmode-dso.txt"
  echo "perf, weft under $pmode: top symbols" && cat "$WORK/perf-$pmode-sym.txt"
fi


# --- invariant check -----------------------------------------------------
# Every thread's message_count equals its live messages, after Weft's and
# pgbench's writes (grouped on the distribution column, so Citus can push
# it down).
for s in "${SYSTEMS[@]}"; do
  if [[ ${SYS_SCHEMA[$s]} == owner-keyed ]]; then
    q="SELECT bool_and(t.message_count = coalesce(c.n, 0)) FROM threads t LEFT JOIN
       (SELECT owner, thread_id, count(*) AS n FROM messages WHERE deleted_at IS NULL GROUP BY owner, thread_id) c
       ON c.owner = t.owner AND c.thread_id = t.id"
  else
    q="SELECT bool_and(t.message_count = coalesce(c.n, 0)) FROM threads t LEFT JOIN
       (SELECT thread_id, count(*) AS n FROM messages WHERE deleted_at IS NULL GROUP BY thread_id) c
       ON c.thread_id = t.id"
  fi
  exact=$(psql_at "${SYS_PORT[$s]}" "${SYS_DB[$s]}" -At -c "$q")
  record --arg sys "$s" --arg exact "$exact" '{diag: "invariant", sys: $sys, message_count_exact: ($exact == "t")}'
done

# --- report --------------------------------------------------------------
# Per (set, system, scenario, client): medians over rounds and min–max;
# the Weft / pgbench ratios are ratios of the medians, with the range of
# the per-round ratios (Weft and pgbench of the same round) beside them.
REPORT=$WORK/report.tsv
jq -rs --argjson secs "$SECS" '
  '"$JQ_MED"'
  def r2: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
  def r0: if . == null then "-" else (. | round | tostring) end;
  def r1: if . == null then "-" else (. * 10 | round / 10 | tostring) end;
  def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
  map(select(.diag == null)) as $runs |
  ($runs | group_by([.set, .topo, .sys, .scen]))[] |
  . as $g |
  ($g | map(select(.client == "weft"))) as $w |
  ($g | map(select(.client == "pgbench"))) as $p |
  ([$g[].round] | unique | map(. as $r | {w: ($w | map(select(.round == $r))[0]), p: ($p | map(select(.round == $r))[0])})
     | map(select(.w != null and .p != null)) | map({rps: div(.w.rps; .p.rps), p99: div(.w.p99_ms; .p.p99_ms)})) as $per |
  [$g[0].set, $g[0].topo, $g[0].sys, $g[0].scen, ($w | length),
   ($w | map(.rps) | med | r0), ($w | map(.rps) | min | r0), ($w | map(.rps) | max | r0),
   ($p | map(.rps) | med | r0), ($p | map(.rps) | min | r0), ($p | map(.rps) | max | r0),
   (div($w | map(.rps) | med; $p | map(.rps) | med) | r2),
   ($per | map(.rps | select(. != null)) | min | r2), ($per | map(.rps | select(. != null)) | max | r2),
   ($w | map(.p99_ms) | med | r1), ($w | map(.p99_ms) | min | r1), ($w | map(.p99_ms) | max | r1),
   ($p | map(.p99_ms) | med | r1),
   (div($w | map(.p99_ms) | med; $p | map(.p99_ms) | med) | r2),
   ($per | map(.p99 | select(. != null)) | min | r2), ($per | map(.p99 | select(. != null)) | max | r2),
   ($w | map(.weft_cpu_us) | med | r0), ($w | map(.pg_cpu_us) | med | r0), ($w | map(.client_cpu_us) | med | r0),
   ($p | map(.pg_cpu_us) | med | r0), ($p | map(.client_cpu_us) | med | r0),
   (($w + $p) | map(.errors) | add),
   ($w | map(.hwm_kib) | max | if . == null then "-" else (. / 1024 | r1) end),
   ($runs | map(select(.set == $g[0].set)) | map(.load_before, .load_after | split(" ")[0] | tonumber) | "\(min)-\(max)")] | @tsv' \
  "$RESULTS" >"$REPORT"

echo
echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); clients, Weft and PostgreSQL share them"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), fsync on, synchronous_commit on; $C clients; $SECS s per run; $ROUNDS rounds interleaved"
echo "data: $USERS users x $THREADS threads x $MESSAGES messages, each request a random user's own thread; Weft pool ${WEFT_POOL_MAX:-default}, log ${WEFT_LOG:-default}"
echo "figures: median over rounds [min-max]; ratio = median Weft / median pgbench [range of the per-round ratios]; CPU per request in us"
for s in "${MAIN_SYS[@]}"; do
  echo
  case $s in cur) echo "Weft cur (this tree at build time: $TREE_DESC) vs pgbench" ;; *) echo "Weft $s (${BASE_BIN[$s]}) vs pgbench" ;; esac
  printf '%-7s | %-17s %-17s %-16s | %-15s %-7s %-16s | %5s %5s %5s | %5s %5s | %s\n' \
    scenario "weft req/s" "pgbench tx/s" "ratio" "weft p99 ms" "pgb p99" "p99 ratio" weft pg cli "pg" "cli" errors
  awk -F'\t' -v s="$s" '$1 == "main" && $3 == s {
    printf "%-7s | %5s [%s-%s] %5s [%s-%s] %4s [%s-%s] | %5s [%s-%s] %7s %4s [%s-%s] | %5s %5s %5s | %5s %5s | %s\n",
      $4, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27 }' "$REPORT"
  awk -F'\t' -v s="$s" '$1 == "main" && $3 == s && $28 != "-" { if ($28 + 0 > m) m = $28 + 0; l = $29 }
    END { if (m != "") print "Weft peak resident memory (VmHWM) over its runs: " m " MiB; load average during the set: " l }' "$REPORT"
done
if ((${#TOPOS[@]} > 0)); then
  echo
  echo "topologies (create, list, get): ratios to plain PostgreSQL (cur), Weft and pgbench each to their own plain run"
  printf '%-8s %-7s | %-17s %6s %9s | %-17s %6s %9s | %8s | %5s %5s | %s\n' \
    topology scenario "weft req/s" "/plain" "p99 ms" "pgbench tx/s" "/plain" "p99 ms" "weft/pgb" weft pg errors
  for scen in create list get; do
    for t in "${TOPOS[@]}"; do
      awk -F'\t' -v t="$t" -v scen="$scen" '$1 == "topologies" && $4 == scen && ($2 == t || $2 == "cur") {
        # plain (cur) is both the row and its own reference when t == cur.
        nk = 0; if ($2 == t) keys[++nk] = "t"; if ($2 == "cur") keys[++nk] = "c"
        for (i = 1; i <= nk; i++) { key = keys[i]; rps[key] = $6; rng[key] = $7 "-" $8; p99[key] = $15; prps[key] = $9; prng[key] = $10 "-" $11; pp99[key] = $18
          ratio[key] = $12; wcpu[key] = $22; pcpu[key] = $23; err[key] = $27 } }
        END { if (!("t" in rps)) exit; pr = (prps["t"] == "-" || prps["c"] == "-" || prps["c"] == 0) ? "-" : sprintf("%.2f", prps["t"] / prps["c"]);
          printf "%-8s %-7s | %5s [%s] %6.2f %9s | %5s [%s] %6s %9s | %8s | %5s %5s | %s\n", t, scen, rps["t"], rng["t"], rps["t"] / rps["c"], p99["t"],
            prps["t"], prng["t"], pr, pp99["t"], ratio["t"], wcpu["t"], pcpu["t"], err["t"] }' "$REPORT"
    done
  done
  [[ ${CITUS_BY:-weft} == bench ]] && echo "NOTE: weft migrate could not distribute its tables on this Citus; the bench distributed them with Weft's plan, one statement at a time"
  echo "(cur = plain PostgreSQL; nocache = plain, WEFT_PG_STATEMENT_CACHE=off; bouncer = through PgBouncer, transaction mode, cache off, pgbench -M extended; citus = coordinator + 2 workers)"
fi
if [[ $TRACE == 1 ]]; then
  echo
  echo "round trips per request (C = 1, $TRACE_N requests of each kind): sends to the database per request (Weft: strace of weft, incl. the release ping; pgbench: strace of pgbench)"
  jq -rs 'map(select(.diag == "roundtrips")) | .[] | [.sys, .client, .scen, (.per_request_pg_sends * 100 | round / 100), (.last_sends_first_bytes // "")] | @tsv' "$RESULTS" |
    awk -F'\t' '{printf "%-8s %-8s %-7s %5s   %s\n", $1, $2, $3, $4, substr($5, 1, 48)}'
fi
echo
jq -rs 'map(select(.diag == "invariant")) | .[] | "message_count exact (\(.sys)): \(.message_count_exact)"' "$RESULTS"
errors=$(jq -s 'map(select(.diag == null) | .errors) | add // 0' "$RESULTS")
echo "load average at the end: $(loadavg)"
mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
cp "$RESULTS" "target/bench/results-$stamp.jsonl"
cp "$REPORT" "target/bench/report-$stamp.tsv"
for f in "$WORK"/perf-*-sym.txt "$WORK"/perf-*-dso.txt; do
  [[ -f $f ]] && cp "$f" "target/bench/$(basename "$f" .txt)-$stamp.txt"
done
echo "raw results: target/bench/results-$stamp.jsonl"
if [[ $errors != 0 ]]; then
  echo "FAILED: $errors requests failed (zero errors required)"
  exit 1
fi

#!/usr/bin/env bash
# Weft's growth benchmark (not a test: it measures and prints, it asserts
# nothing about time). Does a request cost the same on 20× (or 100×) the data?
# docs/BENCHMARKS.md ("Growth") explains the method and holds the results.
#
#   scripts/bench-growth.sh                          # 1× vs 20×, 3 rounds (~3 min on 2 shared cores; ~5 with a baseline)
#   GROWTH_SCALE=100 scripts/bench-growth.sh         # 1× vs 100×: 10^4 vs 10^6 messages in a thread (the issue's goal; ~6–10 min)
#   GROWTH_SCALE=5 GROWTH_ROUNDS=1 GROWTH_REQUESTS=50 scripts/bench-growth.sh   # smoke run
#   BENCH_BASELINE=../bench-base/target/release/weft scripts/bench-growth.sh   # + an older build
#
# Data at scale s (loaded with SQL, either schema), in one database per
# scale, on one throwaway PostgreSQL (fsync and synchronous_commit on):
#   - user `big`: 1,000·s threads, the oldest and newest 5 % of them
#     deleted; among them thread B with 10,000·s messages (alternately
#     user and assistant), the oldest and newest 5 % deleted, and one thread
#     D_r per round with as many messages, deleted through the API;
#   - 100·s other users × 10 threads × 10 messages (10,000·s messages),
#     the newest message of every thread deleted.
# So 1× holds (2 + rounds)·10^4 messages: 5·10^4 with 3 rounds, 10^6 at
# the default scale 20, 5·10^6 at GROWTH_SCALE=100.
#
# Measured per round, 1× and s× interleaved, each by loadgen at C = 1
# (per-request cost = latency; GROWTH_REQUESTS requests after a warm-up):
# get thread B; list B's messages (first page, desc and asc); list big's
# threads (first page, desc and asc); create a message in B; auto_rename B;
# get and list a random other user's thread; then DELETE /v1/threads/D_r
# (one request), followed by a check that the deletion only marked the
# thread: its messages are still stored, the thread and its messages
# answer 404.
#
# Settings: GROWTH_SCALE (2–1000, default 20), GROWTH_ROUNDS (1–5,
# default 3), GROWTH_REQUESTS (per measurement, 10–10000, default 100),
# BENCH_BASELINE (another weft binary, measured the same way on its own
# databases), BENCH_KEEP=1, WEFT_* passed through to `weft serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=growth
source scripts/bench-lib.sh

SCALE=${GROWTH_SCALE:-20}
ROUNDS=${GROWTH_ROUNDS:-3}
REQS=${GROWTH_REQUESTS:-100}
BASELINE=${BENCH_BASELINE:-}
int_in() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || { echo "$1 must be $3..$4" >&2; exit 2; }; }
int_in GROWTH_SCALE "$SCALE" 2 1000
int_in GROWTH_ROUNDS "$ROUNDS" 1 5
int_in GROWTH_REQUESTS "$REQS" 10 10000
[[ -z $BASELINE || -x $BASELINE ]] || { echo "BENCH_BASELINE: $BASELINE is not an executable" >&2; exit 2; }

bench_tools
WORK=$(mktemp -d /tmp/weft-growth.XXXXXX)
chmod 755 "$WORK"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

log "load before build: $(loadavg)"
cargo build --release --quiet -p weft-server --bin weft --example loadgen
LOADGEN=$PWD/target/release/examples/loadgen
export WEFT_JWT_SECRET
WEFT_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

pg_start pg
PORT=$PG_PORT
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (fsync on)"

BIG=16777215          # the user index of `big` in ids (0xffffff)
BIGN=1099511627776    # thread numbers of big's threads in message ids start here (2^40)

# load_growth LABEL DB SCALE: the data above, in the database's schema.
load_growth() {
  local label=$1 db=$2 s=$3 schema now
  schema=$(schema_of "$PORT" "$db")
  now=$(date +%s)
  local bt=$((1000 * s)) n=$((10000 * s)) bu=$((100 * s))
  local b=$((bt / 2))
  local dlist="" r
  for ((r = 1; r <= ROUNDS; r++)); do dlist+="${dlist:+,}$((b + r))"; done
  local tid_bg="'thread_00000000' || lpad(to_hex(u), 12, '0') || lpad(to_hex(t), 12, '0')"
  local tid_big="'thread_00000000' || lpad(to_hex($BIG), 12, '0') || lpad(to_hex(t), 12, '0')"
  local mid_bg="'msg_00000000' || lpad(to_hex(u * 10 + t), 12, '0') || lpad(to_hex(k), 12, '0')"
  local mid_big="'msg_00000000' || lpad(to_hex($BIGN + t), 12, '0') || lpad(to_hex(k), 12, '0')"
  local owners="" nc="" nv_bg="" nv_big0="" newest_big=""
  if [[ $schema == owner-keyed ]]; then
    owners="INSERT INTO owners (owner, newest_thread_id)
      SELECT 'u' || u, 'thread_00000000' || lpad(to_hex(u), 12, '0') || lpad(to_hex(9), 12, '0') FROM generate_series(0, $bu - 1) u
      UNION ALL SELECT 'big', 'thread_00000000' || lpad(to_hex($BIG), 12, '0') || lpad(to_hex($bt - 1), 12, '0');"
    nc=", newest_message_id"
    nv_bg=", 'msg_00000000' || lpad(to_hex(u * 10 + t), 12, '0') || lpad(to_hex(9), 12, '0')"
    nv_big0=", ''"
    newest_big=", newest_message_id = 'msg_00000000' || lpad(to_hex($BIGN + t), 12, '0') || lpad(to_hex($n - 1), 12, '0')"
  fi
  log "[$label] loading scale $s ($schema): big has $bt threads, B and $ROUNDS D threads of $n messages; $bu users x 10 x 10"
  local t0=$SECONDS
  psql_at "$PORT" "$db" -v tmeta="$REF_TMETA" -v tools="$REF_TOOLS" -v content="$REF_CONTENT" \
    -v att="$REF_ATT" -v mmeta="$REF_MMETA" <<EOF
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';
BEGIN;
$owners
INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, message_count$nc)
  SELECT 'u' || u, $tid_bg, $now, $now, :'tmeta'::jsonb, :'tools'::jsonb, NULL, 9$nv_bg
  FROM generate_series(0, $bu - 1) u, generate_series(0, 9) t;
INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at)
  SELECT 'u' || u, $tid_bg, $mid_bg, $now, 'user', :'content'::jsonb, :'att'::jsonb, :'mmeta'::jsonb,
         CASE WHEN k = 9 THEN $now END
  FROM generate_series(0, $bu - 1) u, generate_series(0, 9) t, generate_series(0, 9) k;
INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, message_count$nc, deleted_at)
  SELECT 'big', $tid_big, $now, $now, :'tmeta'::jsonb, :'tools'::jsonb, NULL, 0$nv_big0,
         CASE WHEN t < $bt / 20 OR t >= $bt - $bt / 20 THEN $now END
  FROM generate_series(0, $bt - 1) t;
INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata, deleted_at)
  SELECT 'big', $tid_big, $mid_big, $now, CASE WHEN k % 2 = 0 THEN 'user' ELSE 'assistant' END,
         :'content'::jsonb, :'att'::jsonb, :'mmeta'::jsonb,
         CASE WHEN k < $n / 20 OR k >= $n - $n / 20 THEN $now END
  FROM unnest(ARRAY[$b, $dlist]) t, generate_series(0, $n - 1) k;
UPDATE threads SET message_count = $n - 2 * ($n / 20)$newest_big
  FROM unnest(ARRAY[$b, $dlist]) t
  WHERE owner = 'big' AND id = $tid_big;
COMMIT;
VACUUM (ANALYZE);
CHECKPOINT;
EOF
  log "[$label] loaded in $((SECONDS - t0)) s: $(psql_at "$PORT" "$db" -At -c "SELECT count(*) || ' messages, ' || pg_size_pretty(pg_database_size(current_database())) FROM messages")"
  # Targets: B, each D_r, and 100 other users spread over the range.
  local url="postgres://postgres@127.0.0.1:$PORT/$db" bin_var="WEFT_BIN_$label" tok u t
  tok=$(WEFT_DATABASE_URL=$url "${!bin_var}" token --user big)
  printf '%s\tthread_00000000%012x%012x\n' "$tok" "$BIG" "$b" >"$WORK/B-$label.tsv"
  for ((r = 1; r <= ROUNDS; r++)); do
    printf '%s\tthread_00000000%012x%012x\n' "$tok" "$BIG" "$((b + r))" >"$WORK/D$r-$label.tsv"
  done
  : >"$WORK/any-$label.tsv"
  for ((i = 0; i < 100; i++)); do
    u=$((i * bu / 100))
    tok=$(WEFT_DATABASE_URL=$url "${!bin_var}" token --user "u$u")
    for ((t = 0; t < 10; t++)); do printf '%s\tthread_00000000%012x%012x\n' "$tok" "$u" "$t" >>"$WORK/any-$label.tsv"; done
  done
  printf -v "B_ID_$label" 'thread_00000000%012x%012x' "$BIG" "$b"
  printf -v "DB_$label" '%s' "$db"
}

SYSTEMS=()
# setup LABEL BINARY SCALE
setup() {
  local label=$1 bin=$2 s=$3 db="growth_${1,,}"
  printf -v "WEFT_BIN_$label" '%s' "$bin"
  psql_at "$PORT" postgres -c "CREATE DATABASE $db"
  weft_start "$label" "$bin" "postgres://postgres@127.0.0.1:$PORT/$db"
  reference_rows "$label" "$PORT" "$db"
  load_growth "$label" "$db" "$s"
  SYSTEMS+=("$label")
}
WEFT_CUR=$PWD/target/release/weft
setup cur1 "$WEFT_CUR" 1
setup curN "$WEFT_CUR" "$SCALE"
PAIRS=(cur)
if [[ -n $BASELINE ]]; then
  setup base1 "$BASELINE" 1
  setup baseN "$BASELINE" "$SCALE"
  PAIRS+=(base)
fi

# measure LABEL NAME ROUND TARGETS LOADGEN_ARGS…
measure() {
  local label=$1 name=$2 round=$3 targets=$4 out rc=0 url_var="WEFT_URL_$1"
  shift 4
  out=$("$LOADGEN" --base-url "${!url_var}" --targets "$WORK/$targets-$label.tsv" --concurrency 1 \
    --max-secs 300 --label "$label" "$@") || rc=$?
  [[ -n $out ]] || out='{"ok":0,"errors":1}'
  [[ $rc == 0 ]] || log "[$label] $name: loadgen exited $rc: $out"
  jq -cn --argjson r "$out" --arg sys "$label" --arg name "$name" --argjson round "$round" --arg load "$(loadavg)" \
    '{sys: $sys, name: $name, round: $round, ok: $r.ok, errors: $r.errors, error_statuses: $r.error_statuses,
      p50_ms: $r.p50_ms, mean_ms: $r.mean_ms, p99_ms: $r.p99_ms, load: $load}' | tee -a "$RESULTS" >&2
}

# After DELETE /v1/threads/D: its messages are still stored (the delete
# marked one row), and the API answers 404 for the thread and its list.
check_delete() { # LABEL ROUND
  local label=$1 round=$2 db_var="DB_$1" tok tid stored get list marked
  IFS=$'\t' read -r tok tid <"$WORK/D$round-$label.tsv"
  stored=$(psql_at "$PORT" "${!db_var}" -At -c "SELECT count(*) FROM messages WHERE owner = 'big' AND thread_id = '$tid' AND deleted_at IS NULL")
  marked=$(psql_at "$PORT" "${!db_var}" -At -c "SELECT deleted_at IS NOT NULL FROM threads WHERE owner = 'big' AND id = '$tid'")
  local url_var="WEFT_URL_$label"
  get=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $tok" "${!url_var}/v1/threads/$tid")
  list=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $tok" "${!url_var}/v1/threads/$tid/messages")
  jq -cn --arg sys "$label" --argjson round "$round" --argjson stored "$stored" --arg marked "$marked" \
    --arg get "$get" --arg list "$list" \
    '{check: "delete", sys: $sys, round: $round, thread_marked: ($marked == "t"),
      messages_left_unmarked: $stored, get_status: $get, list_status: $list}' | tee -a "$RESULTS" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS (load $(loadavg))"
  for p in "${PAIRS[@]}"; do
    for sc in 1 N; do
      l=$p$sc
      common=(--requests "$REQS" --warmup 20)
      measure "$l" "get thread (B)" "$round" B --mode get "${common[@]}"
      measure "$l" "list messages desc (B)" "$round" B --mode list --order desc "${common[@]}"
      measure "$l" "list messages asc (B)" "$round" B --mode list --order asc "${common[@]}"
      measure "$l" "list threads desc (big)" "$round" B --mode threads --order desc "${common[@]}"
      measure "$l" "list threads asc (big)" "$round" B --mode threads --order asc "${common[@]}"
      measure "$l" "create message (B)" "$round" B --mode create "${common[@]}"
      measure "$l" "auto_rename (B)" "$round" B --mode rename "${common[@]}"
      measure "$l" "get thread (any user)" "$round" any --mode get "${common[@]}"
      measure "$l" "list messages (any user)" "$round" any --mode list "${common[@]}"
      measure "$l" "delete thread (D)" "$round" "D$round" --mode delete --requests 1 --warmup 5
      check_delete "$l" "$round"
    done
  done
done

# --- report --------------------------------------------------------------
echo
echo "machine: $(nproc) cores; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), fsync on; C = 1, $REQS requests per measurement (delete: 1), $ROUNDS rounds interleaved"
echo "scale 1: B and D threads of 10^4 messages, big has 10^3 threads, 10^4 other messages; scale $SCALE: x$SCALE (a tenth of each deleted)"
echo "figures: median over rounds of each run's p50 latency (ms) [min-max]; ratio = scale $SCALE / scale 1 (goal <= 1.5; delete <= 10 ms)"
for p in "${PAIRS[@]}"; do
  echo
  case $p in cur) echo "Weft (this tree)" ;; *) echo "Weft $p ($BASELINE)" ;; esac
  printf '%-26s | %-22s | %-22s | %6s | %s\n' request "1x p50 ms" "${SCALE}x p50 ms" ratio errors
  jq -rs --arg a "${p}1" --arg b "${p}N" '
    '"$JQ_MED"'
    def f: if . == null then "-" else (. * 1000 | round / 1000 | tostring) end;
    map(select(.name != null)) | group_by(.name) | map(
      (map(select(.sys == $a))) as $x | (map(select(.sys == $b))) as $y |
      [.[0].name, ($x | map(.p50_ms) | med | f), ($x | map(.p50_ms) | min | f), ($x | map(.p50_ms) | max | f),
       ($y | map(.p50_ms) | med | f), ($y | map(.p50_ms) | min | f), ($y | map(.p50_ms) | max | f),
       (($x | map(.p50_ms) | med) as $a | ($y | map(.p50_ms) | med) as $b |
        if $a != null and $b != null and $a > 0 then ($b / $a * 100 | round / 100 | tostring) else "-" end),
       (($x + $y) | map(.errors) | add)]) | .[] | @tsv' "$RESULTS" |
    awk -F'\t' '{printf "%-26s | %7s [%s-%s] | %7s [%s-%s] | %6s | %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
  jq -rs --arg p "$p" 'map(select(.check == "delete" and (.sys | startswith($p)))) | .[] |
    "delete check \(.sys) round \(.round): thread marked \(.thread_marked), its messages left in storage (unmarked) \(.messages_left_unmarked), GET thread \(.get_status), GET messages \(.list_status)"' "$RESULTS"
done
echo
echo "load average at the end: $(loadavg)"
mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
cp "$RESULTS" "target/bench/growth-$stamp.jsonl"
echo "raw results: target/bench/growth-$stamp.jsonl"

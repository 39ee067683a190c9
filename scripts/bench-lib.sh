# Shared parts of Weft's benchmarks (sourced by scripts/bench.sh and
# scripts/bench-growth.sh; not run on its own, never by the tests).
#
# Everything here runs on 127.0.0.1, in one work directory ($WORK) that the
# caller's EXIT trap removes, and every process it starts is recorded so
# bench_cleanup stops exactly those (by pid, never by name).
#
# The caller sets WORK (from mktemp) and sources this file; then calls
# bench_tools, and bench_cleanup from its EXIT trap.

BENCH_PIDS=()       # background processes to stop (weft, pgbouncer, samplers)
BENCH_CLUSTERS=()   # PostgreSQL data directories to stop
AS_PG=()
if [[ $(id -u) == 0 ]]; then AS_PG=(runuser -u postgres --); fi

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
# The median both reports print (a jq definition): the middle of the
# non-null values, the lower of the two middle ones for an even count.
JQ_MED='def med: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;'
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Finds the PostgreSQL server binaries and the tools the benchmarks use.
bench_tools() {
  PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")")
  [[ -x $PGBIN/pgbench && -x $PGBIN/initdb ]] || die "no PostgreSQL server binaries / pgbench found"
  for t in jq curl python3; do command -v $t >/dev/null || die "$t is needed"; done
  [[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is needed: apt-get install -y time"
}

# Stops every process and cluster this run started; removes $WORK unless
# BENCH_KEEP=1.
bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  BENCH_PIDS=()
  for d in "${BENCH_CLUSTERS[@]}"; do
    "${AS_PG[@]}" "$PGBIN/pg_ctl" stop -D "$d" -m fast -w >/dev/null 2>&1 || true
  done
  BENCH_CLUSTERS=()
  if [[ -n ${WORK:-} && -d $WORK ]]; then
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
}

# pg_start NAME [EXTRA_CONF]: a throwaway cluster in $WORK/NAME on a free
# port, fsync and synchronous_commit ON (durable commits, as in
# production). Sets PG_PORT and PG_DATA.
pg_start() {
  local name=$1 extra=${2:-}
  PG_DATA=$WORK/$name
  PG_PORT=$(free_port)
  mkdir "$PG_DATA"
  [[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$PG_DATA"
  "${AS_PG[@]}" "$PGBIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$WORK/$name.initdb.log"
  cat >>"$PG_DATA/postgresql.conf" <<EOF
# weft bench: durable commits (fsync, synchronous_commit, full_page_writes
# on: PostgreSQL's defaults), loopback only.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
max_wal_size = 4GB
log_min_messages = warning
$extra
EOF
  touch "$WORK/$name.log"
  [[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$WORK/$name.log"
  "${AS_PG[@]}" "$PGBIN/pg_ctl" start -w -t 60 -D "$PG_DATA" -l "$WORK/$name.log" -o "-p $PG_PORT" >/dev/null
  BENCH_CLUSTERS+=("$PG_DATA")
}

# psql_at PORT DB [psql args…]: psql on a bench cluster, stopping on error.
psql_at() {
  local port=$1 db=$2
  shift 2
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# The postmaster's pid of a cluster.
pg_pid() { head -1 "$1/postmaster.pid"; }

# CPU time in clock ticks (1/100 s) used so far by a cluster: the
# postmaster, its exited children (cutime/cstime: backends of clients that
# disconnected) and its live children (Weft's pooled backends, autovacuum,
# the WAL writer…).
pg_cpu_ticks() { # DATA_DIR…
  local total=0 d pid
  for d in "$@"; do
    pid=$(pg_pid "$d")
    total=$(( total + $(awk '{s=$0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12]+f[13]+f[14]+f[15]}' "/proc/$pid/stat") ))
    for c in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
      total=$(( total + $(proc_ticks "$c") ))
    done
  done
  echo "$total"
}

# Live children of the clusters' postmasters (backends and workers).
pg_children() { # DATA_DIR…
  local n=0 d pid
  for d in "$@"; do
    pid=$(pg_pid "$d")
    n=$(( n + $(wc -w <"/proc/$pid/task/$pid/children" 2>/dev/null || echo 0) ))
  done
  echo "$n"
}

# Waits (at most 5 s) until the clusters have no more live children than
# BEFORE: a client's backends exit with it, and their CPU reaches the
# postmaster's cutime/cstime only once it has reaped them.
pg_wait_reaped() { # BEFORE DATA_DIR…
  local before=$1 _
  shift
  for _ in $(seq 1 50); do
    (( $(pg_children "$@") <= before )) && return 0
    sleep 0.1
  done
}

# utime + stime of one live process, in ticks (0 if it is gone).
proc_ticks() {
  awk '{s=$0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12]+f[13]}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# VmHWM / VmRSS of a process, in KiB.
vm_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# weft_start LABEL BINARY DATABASE_URL [VAR=VALUE…]: `weft serve` on a
# free port with the environment's WEFT_* settings plus the given ones.
# Sets WEFT_URL_<LABEL> and WEFT_PID_<LABEL>.
weft_start() {
  local label=$1 bin=$2 url=$3 port pid
  shift 3
  port=$(free_port)
  env "$@" WEFT_DATABASE_URL="$url" WEFT_BIND="127.0.0.1:$port" "$bin" serve >"$WORK/weft-$label.log" 2>&1 &
  pid=$!
  BENCH_PIDS+=("$pid")
  printf -v "WEFT_URL_$label" '%s' "http://127.0.0.1:$port"
  printf -v "WEFT_PID_$label" '%s' "$pid"
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/weft-$label.log" >&2; die "weft ($label) exited at start"; }
    sleep 0.1
  done
  die "weft ($label) did not become ready"
}

# weft_api LABEL TOKEN METHOD PATH [JSON]: one API call, body on stdout.
weft_api() {
  local url_var="WEFT_URL_$1"
  curl -fsS -X "$3" -H "authorization: Bearer $2" -H 'content-type: application/json' \
    ${5:+--data "$5"} "${!url_var}$4"
}

# schema_of PORT DB: "owner-keyed" (migrations 0002+: owners table,
# (owner, id) keys, newest_message_id) or "id-keyed" (0001 only).
schema_of() {
  if [[ $(psql_at "$1" "$2" -At -c "SELECT to_regclass('owners') IS NOT NULL") == t ]]; then
    echo owner-keyed
  else
    echo id-keyed
  fi
}

# The id helpers every loader and pgbench script share (SQL expressions):
# thread (u, t) → thread_00000000 + 12 hex of u + 12 hex of t; message k of
# thread number n → msg_00000000 + 12 hex of n + 12 hex of k. Loaded ids
# sort below every id Weft mints (UUIDv7s start with the time, 0x019…), so
# Weft's own appends stay above a thread's newest.
SQL_TID="'thread_00000000' || lpad(to_hex(u), 12, '0') || lpad(to_hex(t), 12, '0')"

# reference_rows LABEL PORT DB: creates one thread with one message through
# Weft (user "ref"), and reads back the JSON Weft stored for them, so the
# loaders copy Weft's own stored forms. Sets REF_* variables.
reference_rows() {
  local label=$1 port=$2 db=$3 bin_var="WEFT_BIN_$1" tok tid
  tok=$(WEFT_DATABASE_URL="postgres://postgres@127.0.0.1:$port/$db" "${!bin_var}" token --user ref)
  tid=$(weft_api "$label" "$tok" POST /v1/threads '{"metadata":{}}' | jq -r .id)
  weft_api "$label" "$tok" POST "/v1/threads/$tid/messages" \
    '{"role":"user","content":"How much did the GPUs cost last month?"}' >/dev/null
  IFS=$'\t' read -r REF_TMETA REF_TOOLS < <(psql_at "$port" "$db" -At -F $'\t' \
    -c "SELECT metadata::text, tool_resources::text FROM threads WHERE id = '$tid'")
  IFS=$'\t' read -r REF_CONTENT REF_ATT REF_MMETA < <(psql_at "$port" "$db" -At -F $'\t' \
    -c "SELECT content::text, attachments::text, metadata::text FROM messages WHERE thread_id = '$tid'")
  [[ -n $REF_CONTENT ]] || die "could not read the reference rows"
}

# load_grid PORT DB SCHEMA USERS THREADS MESSAGES [PREFIX]: users PREFIX0…
# with THREADS threads of MESSAGES messages each, by SQL, in either
# schema, then ANALYZE. Needs reference_rows first.
load_grid() {
  local port=$1 db=$2 schema=$3 users=$4 threads=$5 msgs=$6 prefix=${7:-u} now
  now=$(date +%s)
  local owners_sql="" newest_col="" newest_val=""
  if [[ $schema == owner-keyed ]]; then
    owners_sql="INSERT INTO owners (owner, newest_thread_id)
      SELECT :'prefix' || u, 'thread_00000000' || lpad(to_hex(u), 12, '0') || lpad(to_hex(:threads - 1), 12, '0')
      FROM generate_series(0, :users - 1) u;"
    newest_col=", newest_message_id"
    newest_val=", CASE WHEN :msgs > 0 THEN 'msg_00000000' || lpad(to_hex(u * :threads + t), 12, '0') || lpad(to_hex(:msgs - 1), 12, '0') ELSE '' END"
  fi
  psql_at "$port" "$db" -v prefix="$prefix" -v users="$users" -v threads="$threads" -v msgs="$msgs" \
    -v now="$now" -v tmeta="$REF_TMETA" -v tools="$REF_TOOLS" -v content="$REF_CONTENT" \
    -v att="$REF_ATT" -v mmeta="$REF_MMETA" <<EOF
SET synchronous_commit = off;
BEGIN;
$owners_sql
INSERT INTO threads (owner, id, created_at, updated_at, metadata, tool_resources, title, message_count$newest_col)
  SELECT :'prefix' || u, $SQL_TID, :now, :now, :'tmeta'::jsonb, :'tools'::jsonb, NULL, :msgs$newest_val
  FROM generate_series(0, :users - 1) u, generate_series(0, :threads - 1) t;
INSERT INTO messages (owner, thread_id, id, created_at, role, content, attachments, metadata)
  SELECT :'prefix' || u, $SQL_TID,
         'msg_00000000' || lpad(to_hex(u * :threads + t), 12, '0') || lpad(to_hex(k), 12, '0'),
         :now, 'user', :'content'::jsonb, :'att'::jsonb, :'mmeta'::jsonb
  FROM generate_series(0, :users - 1) u, generate_series(0, :threads - 1) t, generate_series(0, :msgs - 1) k;
COMMIT;
ANALYZE;
EOF
}

# The tokens and targets file of a loaded grid: TOKEN<TAB>THREAD_ID per
# thread, the token minted by BINARY for user PREFIX<u>.
grid_targets() { # BINARY DB_URL USERS THREADS OUT [PREFIX]
  local bin=$1 url=$2 users=$3 threads=$4 out=$5 prefix=${6:-u} u t tok
  : >"$out"
  for ((u = 0; u < users; u++)); do
    tok=$(WEFT_DATABASE_URL=$url "$bin" token --user "$prefix$u")
    for ((t = 0; t < threads; t++)); do
      printf '%s\tthread_00000000%012x%012x\n' "$tok" "$u" "$t" >>"$out"
    done
  done
}

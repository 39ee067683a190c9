#!/usr/bin/env bash
# Runs Weft's whole test suite on this machine: every Rust test (unit, app
# on mocks, adapter conformance and HTTP end to end on every topology —
# SQLite, PostgreSQL, PostgreSQL through PgBouncer in transaction mode with
# two Weft instances, Citus — and the fault tests) and the official OpenAI
# Python and Node SDKs against a real `weft serve`.
#
# It installs what is missing and can be installed from the OS packages
# (PostgreSQL server binaries, PgBouncer, a Python venv with the pinned
# SDK, Node.js from Debian packages and the pinned Node SDK); the servers
# themselves (PostgreSQL, PgBouncer, the Citus cluster) are started by the
# test harness (crates/testkit), not here.
#
# Citus is not packaged for every OS. Without it the Citus topology is
# skipped, and the end of the run says so and how to install it; with
# WEFT_REQUIRE_CITUS=1 (CI) a missing Citus is an error instead.
#
#   scripts/test.sh                                 everything
#   scripts/test.sh --sdk-only python [pytest args]  the Python SDK suite alone
#   scripts/test.sh --sdk-only node [node --test args]  the Node SDK suite alone
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

sdk_only=""
if [ "${1:-}" = "--sdk-only" ]; then
  sdk_only="${2:-}"
  case "$sdk_only" in
    python | node) shift 2 ;;
    *) echo "usage: $0 [--sdk-only python|node [test runner args]]" >&2; exit 2 ;;
  esac
fi

as_root_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install $* (or install it yourself)" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

have_pg_binaries() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

# The Citus extension in the library directory of an installed PostgreSQL
# (what crates/testkit looks for).
have_citus() {
  local bin lib
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] || continue
    lib=$("$bin/pg_config" --pkglibdir 2>/dev/null || echo "${bin%/bin}/lib")
    [ -f "$lib/citus.so" ] && return 0
  done
  return 1
}

citus_skipped=""

# Said at the very end, whether the tests passed or not.
citus_note() {
  [ -n "$citus_skipped" ] || return 0
  cat >&2 <<'MSG'

== NOTE: the Citus topology was NOT run (every test named *citus* was skipped).
   No installed PostgreSQL has the Citus extension (citus.so). To run it,
   install Citus's own packages for your PostgreSQL major version, e.g. on
   Debian/Ubuntu with PostgreSQL 15:
     curl -s https://packagecloud.io/install/repositories/citusdata/community/script.deb.sh | sudo bash
     sudo apt-get install -y postgresql-15-citus-13.0
   (see https://docs.citusdata.com/en/stable/installation/single_node.html),
   or build it from source with ../shared/citus/install.sh. Then run
   scripts/test.sh again: the test harness starts its own Citus cluster.
MSG
}

if [ -z "$sdk_only" ]; then
  if [ -z "${WEFT_TEST_DATABASE_URL:-}" ] && ! have_pg_binaries; then
    log "PostgreSQL server binaries missing: installing them"
    as_root_install postgresql
    # The harness runs its own throwaway cluster; the packaged one is not needed.
    (command -v service >/dev/null && service postgresql stop) >/dev/null 2>&1 || true
  fi

  if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    log "PgBouncer missing: installing it (the harness runs its own instance, never the service)"
    as_root_install pgbouncer
    (command -v service >/dev/null && service pgbouncer stop) >/dev/null 2>&1 || true
  fi

  if ! have_citus; then
    if [ "${WEFT_REQUIRE_CITUS:-0}" = 1 ]; then
      echo "WEFT_REQUIRE_CITUS=1 but no PostgreSQL has citus.so installed" >&2
      exit 1
    fi
    citus_skipped=1
  fi
  trap citus_note EXIT

  log "Rust tests"
  if cargo nextest --version >/dev/null 2>&1; then
    if [ -n "$citus_skipped" ]; then
      cargo nextest run --workspace --no-fail-fast -E 'not test(/citus/)'
    else
      cargo nextest run --workspace --no-fail-fast
    fi
  else
    if [ -n "$citus_skipped" ]; then
      cargo test --workspace --no-fail-fast -- --skip citus
    else
      cargo test --workspace --no-fail-fast
    fi
  fi
fi

cargo build -p weft-server --bin weft
status=0

if [ -z "$sdk_only" ] || [ "$sdk_only" = python ]; then
  log "OpenAI Python SDK against a real weft"
  venv=target/sdk-venv
  # Rebuilt whenever the pinned requirements change.
  if ! cmp -s tests/sdk/requirements.txt "$venv/.requirements" 2>/dev/null; then
    command -v python3 >/dev/null 2>&1 || { apt-get update && apt-get install -y python3 python3-venv; }
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
    cp tests/sdk/requirements.txt "$venv/.requirements"
  fi
  WEFT_BIN="$PWD/target/debug/weft" "$venv/bin/pytest" -q tests/sdk "$@" || status=1
fi

if [ -z "$sdk_only" ] || [ "$sdk_only" = node ]; then
  log "OpenAI Node SDK against a real weft"
  if ! command -v node >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
  fi
  modules=target/sdk-node
  # Reinstalled whenever the pinned manifest or lock file changes.
  if ! cmp -s tests/sdk/node/package-lock.json "$modules/.installed-lock" 2>/dev/null; then
    rm -rf "$modules"
    mkdir -p "$modules"
    cp tests/sdk/node/package.json tests/sdk/node/package-lock.json tests/sdk/node/.npmrc "$modules/"
    (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error)
    cp tests/sdk/node/package-lock.json "$modules/.installed-lock"
  fi
  WEFT_BIN="$PWD/target/debug/weft" NODE_PATH="$PWD/$modules/node_modules" \
    node --test "$@" tests/sdk/node/ || status=1
fi

exit "$status"

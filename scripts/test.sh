#!/usr/bin/env bash
# Runs Weft's whole test suite on this machine: every Rust test (unit, app
# on mocks, adapter conformance on real PostgreSQL and SQLite, HTTP end to
# end) and the official OpenAI Python and Node SDKs against a real `weft serve`.
#
# It installs what is missing (PostgreSQL server binaries, a Python venv
# with the pinned SDK, Node.js from Debian packages and the pinned Node
# SDK); the PostgreSQL test server itself is started by the test harness
# (crates/testkit), not here.
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

have_pg_binaries() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if [ -z "$sdk_only" ] && [ -z "${WEFT_TEST_DATABASE_URL:-}" ] && ! have_pg_binaries; then
  log "PostgreSQL server binaries missing: installing them"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install postgresql (or set WEFT_TEST_DATABASE_URL)" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  # The harness runs its own throwaway cluster; the packaged one is not needed.
  (command -v service >/dev/null && service postgresql stop) >/dev/null 2>&1 || true
fi

if [ -z "$sdk_only" ]; then
  log "Rust tests"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
  else
    cargo test --workspace --no-fail-fast
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

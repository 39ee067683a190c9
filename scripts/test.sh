#!/usr/bin/env bash
# Runs Weft's whole test suite on this machine: every Rust test (unit, app
# on mocks, adapter conformance on real PostgreSQL and SQLite, HTTP end to
# end) and the official OpenAI Python SDK against a real `weft serve`.
#
# It installs what is missing (PostgreSQL server binaries, a Python venv
# with the pinned SDK); the PostgreSQL test server itself is started by the
# test harness (crates/testkit), not here.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

have_pg_binaries() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if [ -z "${WEFT_TEST_DATABASE_URL:-}" ] && ! have_pg_binaries; then
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

log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

log "OpenAI Python SDK against a real weft"
cargo build -p weft-server --bin weft
venv=target/sdk-venv
# Rebuilt whenever the pinned requirements change.
if ! cmp -s tests/sdk/requirements.txt "$venv/.requirements" 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || { apt-get update && apt-get install -y python3 python3-venv; }
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/.requirements"
fi
WEFT_BIN="$PWD/target/debug/weft" "$venv/bin/pytest" -q tests/sdk

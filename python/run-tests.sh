#!/usr/bin/env bash
# Builds the Python package from source into a fresh virtual environment and runs its
# tests against the release `fmnist` binary (built first, for the tests that compare the
# two). Usage: python/run-tests.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary as `cargo test --release --workspace` builds it: after the README's test
# command this is already done, where `cargo build -p fmnist` would build every crate
# again with other features (6½ minutes on 2 cores).
cargo test --release --workspace --no-run -q
venv="${FMNIST_VENV:-target/python-venv}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "./python[test]"
"$venv/bin/python" -m pytest -q python/tests "$@"

#!/usr/bin/env bash
# Builds the Python package from source into a fresh virtual environment and runs its
# tests against the release `fmnist` binary (built first, for the tests that compare the
# two). Usage: python/run-tests.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p fmnist
venv="${FMNIST_VENV:-target/python-venv}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "./python[test]"
"$venv/bin/python" -m pytest -q python/tests "$@"

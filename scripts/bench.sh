#!/usr/bin/env bash
# The benchmark command: ./scripts/bench.sh [--quick] [python -m bench options...]
# Sets up the project and Synapse venvs like scripts/test.sh, then runs the suite, which writes
# docs/benchmarks.md. Benchmarks are not part of the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "Project venv (.venv)"
setup_project_venv test

step "Synapse venv"
setup_synapse_venv

export PONTIS_BENCH_COMMAND="./scripts/bench.sh${*:+ $*}"
step "python -m bench $*"
exec env PYTHONPATH="$PONTIS_ROOT${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python -m bench "$@"

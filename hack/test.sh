#!/usr/bin/env bash
# The one test command: installs, builds what is missing, runs everything (e2e included).
#   ./hack/test.sh                 # everything
#   ./hack/test.sh -m "not e2e"    # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.noderecover-install
want=$(cat pyproject.toml testkit/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing (pip install -e .[test] -e ./testkit)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]" -e ./testkit
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src testkit tests bench
ruff format --check src testkit tests bench
echo "== mypy --strict"
mypy --strict
echo "== import contracts (lint-imports: layers point down, pure core)"
lint-imports --no-cache

echo "== control plane, helm, promtool (built once into the cache, reused after)"
build_start=$(date +%s)
python -m noderecover_testkit build
build_secs=$(( $(date +%s) - build_start ))

echo "== pytest"
test_start=$(date +%s)
set +e
pytest -ra --durations=15 "$@"
rc=$?
set -e
test_secs=$(( $(date +%s) - test_start ))
echo "== durations: build ${build_secs}s, tests ${test_secs}s, total $(( $(date +%s) - start ))s"
exit $rc

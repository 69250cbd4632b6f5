#!/usr/bin/env bash
# The one test command: installs, builds what is missing, runs everything (e2e included).
#   ./hack/test.sh                 # everything
#   ./hack/test.sh -m "not e2e"    # extra args go to pytest (one pytest run, after the build)
#
# On a fresh machine the pinned binaries (control plane, helm, promtool, actionlint) are built
# from the Go module proxy into the cache (~10-15 min on 2 cores). That build starts first, in
# the background, and the install, the linters and the unit suite run meanwhile; the tests that
# need the binaries (e2e, marked `tools`: helm, promtool, and mkdocs build --strict of the docs)
# run once it is done. The image (the Dockerfile built
# by buildah on a Debian base made by mmdebstrap, both installed with apt-get when missing)
# builds beside it, in the background too (~2.5 min, mostly downloads). With the cache warm
# each build step takes a fraction of a second. The e2e part runs on two pytest-xdist workers
# (each starts its own control plane; whole files, the slowest first: tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

PY=${PYTHON:-python3}
build_log=$(mktemp -t noderecover-build.XXXXXX)
image_log=$(mktemp -t noderecover-image.XXXXXX)
build_pid=""
image_pid=""
stop_build() {
  # Each build runs in its own session (setsid): its go / buildah processes go with it.
  for pid in "$build_pid" "$image_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
}
trap stop_build EXIT

echo "== control plane, helm, promtool, actionlint: building what is missing in the background"
build_start=$(date +%s)
# Standard library only (plus the source trees): it does not need the venv.
# setsid: its own process group, so stop_build takes the go processes too (without setsid,
# only the build's shell is signalled).
session=$(command -v setsid || true)
PYTHONPATH="$PWD/src:$PWD/testkit/src" $session bash -c '
  s=$(date +%s); "$0" -m noderecover_testkit build; rc=$?
  echo $(( $(date +%s) - s )) > "$1.secs"; exit $rc' "$PY" "$build_log" >"$build_log" 2>&1 &
build_pid=$!

echo "== the image (Dockerfile, buildah, a Debian base by mmdebstrap): building if missing, in the background"
PYTHONPATH="$PWD/src:$PWD/testkit/src" $session bash -c '
  s=$(date +%s); "$0" -m noderecover_testkit image; rc=$?
  echo $(( $(date +%s) - s )) > "$1.secs"; exit $rc' "$PY" "$image_log" >"$image_log" 2>&1 &
image_pid=$!

wait_build() {
  local rc=0 irc=0
  wait "$build_pid" || rc=$?
  build_pid=""
  build_secs=$(cat "$build_log.secs" 2>/dev/null || echo "?")
  build_wait=$(( $(date +%s) - build_start ))
  cat "$build_log"
  if [ "$rc" -ne 0 ]; then
    echo "== the build failed (exit $rc): see above"
    exit "$rc"
  fi
  echo "== build done: ${build_secs}s building, ready ${build_wait}s after the start"
  wait "$image_pid" || irc=$?
  image_pid=""
  image_secs=$(cat "$image_log.secs" 2>/dev/null || echo "?")
  cat "$image_log"
  if [ "$irc" -ne 0 ]; then
    echo "== the image build failed (exit $irc): see above"
    exit "$irc"
  fi
  echo "== image done: ${image_secs}s, ready $(( $(date +%s) - build_start ))s after the start"
}

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

# Debian packages the fence-agent tests drive (tests/test_fencing_emulators.py): the real
# fence_ipmilan and fence_redfish (fence-agents), and the ipmitool fence_ipmilan runs.
# Installed only when missing; the tests fail (never skip) without them.
debs=()
{ [ -x /usr/sbin/fence_ipmilan ] && [ -x /usr/sbin/fence_redfish ]; } || debs+=(fence-agents)
command -v ipmitool >/dev/null 2>&1 || debs+=(ipmitool)
if [ "${#debs[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing Debian packages: ${debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
  else
    echo "== cannot install ${debs[*]} (needs apt-get as root): the fence-agent tests" \
      "(tests/test_fencing_emulators.py) will fail; install them, or deselect -m 'not emulators'"
  fi
fi

echo "== ruff"
ruff check src testkit tests bench
ruff format --check src testkit tests bench
echo "== mypy --strict"
mypy --strict
echo "== import contracts (lint-imports: layers point down, pure core)"
lint-imports --no-cache

test_start=$(date +%s)
set +e
if [ "$#" -gt 0 ]; then
  wait_build
  echo "== pytest $*"
  pytest -ra --durations=15 "$@"
  rc=$?
else
  echo "== pytest, part 1: the unit suite (while the build runs)"
  pytest -ra --durations=10 -m "not e2e and not tools"
  rc1=$?
  wait_build
  echo "== pytest, part 2: end-to-end on the real control plane, and the helm / promtool tests" \
    "(two workers, each with its own control plane; whole files per worker, longest first)"
  pytest -ra --durations=15 -m "e2e or tools" -n "${E2E_WORKERS:-2}" --dist loadfile --no-loadscope-reorder
  rc2=$?
  echo "== pytest exit codes: unit $rc1, e2e/tools $rc2"
  rc=$(( rc1 != 0 ? rc1 : rc2 ))
fi
set -e
test_secs=$(( $(date +%s) - test_start ))
echo "== durations: build ${build_secs}s, image ${image_secs}s (both overlapped with the install, linters and unit suite), tests ${test_secs}s, total $(( $(date +%s) - start ))s"
exit $rc

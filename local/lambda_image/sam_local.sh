#!/usr/bin/env bash
# `make sam-local`: Docker (installed and started if missing), the stand-in Lambda image, `make build`,
# then tests/samlocal, which runs events/README.md's `sam local` commands against the one-machine stack
# listening on Docker's bridge. Stops what it started (the daemon only if it started it). Never skips:
# where Docker cannot run, it fails and says why.
#
#   sam_local.sh [--alongside COMMAND] [pytest args...]
#
# With --alongside (what `make test` does), the preparation (Docker, image, build: mostly downloads
# and disk) runs in the background while COMMAND (the other test suites) runs; the sam local tests
# start when both are done, and only if COMMAND passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BRIDGE=172.17.0.1  # local.stack.DOCKER_BRIDGE_HOST; events/env.json names it
PY=${PY:-.venv/bin/python}
fail() { echo "sam-local: $*" >&2; exit 1; }
started=$SECONDS

alongside=
if [[ ${1:-} == --alongside ]]; then
  alongside=$2
  shift 2
fi

state=$(mktemp -d /tmp/sam-local.XXXXXX)
cleanup() {
  local pid
  pid=$(cat "$state/dockerd.pid" 2>/dev/null || true)
  if [[ -n $pid ]]; then
    echo "sam-local: stopping the Docker daemon it started (pid $pid)" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$state"
}
trap cleanup EXIT

ensure_docker() {
  if ! command -v dockerd >/dev/null; then
    [[ $(id -u) -eq 0 ]] || fail "Docker is not installed, and installing it needs root: apt-get install -y docker.io"
    echo "sam-local: installing Docker (apt-get install docker.io)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } >/dev/null \
      || fail "apt-get install docker.io failed"
  fi
  if ! docker info >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || fail "no Docker daemon is running, and starting one needs root (dockerd)"
    echo "sam-local: starting dockerd" >&2
    dockerd >"$state/dockerd.log" 2>&1 &
    echo $! >"$state/dockerd.pid"
    for _ in $(seq 1 120); do
      docker info >/dev/null 2>&1 && break
      kill -0 "$!" 2>/dev/null || { rm -f "$state/dockerd.pid"; tail -20 "$state/dockerd.log" >&2; fail "dockerd exited"; }
      sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 "$state/dockerd.log" >&2; fail "dockerd did not answer within 60 s"; }
  fi
  ip -4 addr show docker0 2>/dev/null | grep -q "inet $BRIDGE/" \
    || fail "Docker's bridge docker0 is not $BRIDGE: the stack and events/env.json expect it there"
  echo "sam-local: Docker ready after $((SECONDS - started)) s" >&2
}

prepare() {
  ensure_docker
  local image
  image=$(local/lambda_image/build.sh) || fail "could not build the Lambda image"
  echo "sam-local: image $image ready after $((SECONDS - started)) s" >&2
  ${MAKE:-make} --no-print-directory build
  echo "sam-local: make build done after $((SECONDS - started)) s" >&2
}

if [[ -n $alongside ]]; then
  prepare >"$state/prepare.log" 2>&1 &
  preparing=$!
  status=0
  bash -c "$alongside" || status=$?
  prepared=0
  wait "$preparing" || prepared=$?
  cat "$state/prepare.log" >&2
  [[ $status -eq 0 ]] || { echo "sam-local: '$alongside' failed (exit $status)" >&2; exit "$status"; }
  [[ $prepared -eq 0 ]] || fail "preparing Docker, the image or the build failed (exit $prepared)"
else
  prepare
fi
status=0
"$PY" -m pytest tests/samlocal -q "$@" || status=$?
echo "sam-local: finished in $((SECONDS - started)) s (tests exit $status)" >&2
exit "$status"

#!/usr/bin/env bash
# Measure the shipped containers end to end and print the figures:
#   MLflow image build time and size, compose up -> MLflow /health ready, the chain over HTTP,
#   `bentoml containerize` time and the service image's size, compose up -> service /readyz.
#
#   bench/containers.sh [--no-cache]
#
# Needs podman (+ podman-compose) or docker (+ compose); on the build machines first run
# ../shared/containers/prepare.sh and `. /tmp/containers/env.sh`. Everything it creates (a
# compose project with a unique name, its volume and network, two image tags, a temporary
# BentoML home) is removed on exit; the build cache is kept, so pass --no-cache for cold figures.
set -euo pipefail
cd "$(dirname "$0")/.."

NO_CACHE=()
[ "${1:-}" = "--no-cache" ] && NO_CACHE=(--no-cache)
PY=${PYTHON:-.venv/bin/python}
BENTOML=$(dirname "$PY")/bentoml
ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
  if podman info >/dev/null 2>&1; then ENGINE=podman; else ENGINE=docker; fi
fi
if [ "$ENGINE" = podman ]; then COMPOSE=(podman-compose); else COMPOSE=(docker compose); fi
"$ENGINE" info >/dev/null 2>&1 || { echo "bench: $ENGINE is not usable" >&2; exit 1; }

suffix=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
project=clbench$suffix
work=$(mktemp -d)
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export MLFLOW_PORT=$(free_port) SERVICE_PORT=$(free_port)
export MLFLOW_IMAGE=classifier-mlflow-bench:$suffix SERVICE_IMAGE=classification-service-bench:$suffix
export BENTOML_HOME=$work/bentoml BENTOML_DO_NOT_TRACK=True
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
compose() { "${COMPOSE[@]}" -p "$project" -f docker-compose.yml "$@"; }

cleanup() {
  compose down -v >/dev/null 2>&1 || true
  "$ENGINE" network rm "${project}_default" >/dev/null 2>&1 || true
  "$ENGINE" rmi --no-prune -f "$MLFLOW_IMAGE" "$SERVICE_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# Poll a URL until it answers 200 (healthchecks do not gate anything under podman-compose).
wait_ready() {
  "$PY" -c 'import sys
from bench.servers import NotReady, wait_for_http
try:
    wait_for_http(sys.argv[1], timeout=300, interval=0.1)
except NotReady as error:
    sys.exit(f"bench: {error}")' "$1"
}
image_mb() { "$ENGINE" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f", $1 / 1e6}'; }
log() { echo "bench: $*" >&2; }

log "building the MLflow image"
t=$(now); compose build "${NO_CACHE[@]}" mlflow >"$work/build.log" 2>&1; mlflow_build=$(since "$t")
log "compose up -d mlflow"
t=$(now); compose up -d mlflow >"$work/up.log" 2>&1; wait_ready "$MLFLOW_TRACKING_URI/health"; mlflow_ready=$(since "$t")

log "experiments -> promote -> import over HTTP"
t=$(now)
"$PY" -m training.experiments --promote >"$work/train.log" 2>&1
"$PY" scripts/import_production.py >"$work/import.log" 2>&1
chain=$(since "$t")

log "bentoml build + containerize"
# BENTOFILE=path measures another bentofile than ./bentofile.yaml.
t=$(now); "$BENTOML" build ${BENTOFILE:+-f "$BENTOFILE"} >"$work/bento.log" 2>&1; bento_build=$(since "$t")
opts=(); [ ${#NO_CACHE[@]} -gt 0 ] && opts=(--opt no-cache)
t=$(now)
"$BENTOML" containerize classification_service:latest --backend "$ENGINE" -t "$SERVICE_IMAGE" "${opts[@]}" \
  >"$work/containerize.log" 2>&1
containerize=$(since "$t")

log "compose up -d service"
t=$(now); compose up -d --no-deps service >"$work/up-service.log" 2>&1
wait_ready "http://127.0.0.1:$SERVICE_PORT/readyz"; service_ready=$(since "$t")

cache=cached; [ ${#NO_CACHE[@]} -gt 0 ] && cache="no cache"
printf '%-44s %s\n' \
  "engine" "$ENGINE ($("$ENGINE" --version | awk '{print $NF}'), builds: $cache)" \
  "mlflow image build (compose build)" "${mlflow_build} s" \
  "mlflow image size" "$(image_mb "$MLFLOW_IMAGE") MB" \
  "compose up -> mlflow /health 200" "${mlflow_ready} s" \
  "experiments --promote + import over HTTP" "${chain} s" \
  "bentoml build" "${bento_build} s" \
  "bentoml containerize" "${containerize} s" \
  "service image size" "$(image_mb "$SERVICE_IMAGE") MB" \
  "compose up service -> /readyz 200" "${service_ready} s"

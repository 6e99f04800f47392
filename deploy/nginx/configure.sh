#!/bin/sh
# Prepares a run folder for the balancer (deploy/nginx/nginx.conf), from the environment:
#   UPSTREAMS  the replicas' addresses, HOST:PORT separated by spaces (compose: "service:3000 service-2:3000")
#   LISTEN     what nginx listens on: a port or ADDRESS:PORT (compose: 8080; tests: 127.0.0.1:PORT)
#
#   UPSTREAMS="127.0.0.1:3001 127.0.0.1:3002" LISTEN=127.0.0.1:8080 sh deploy/nginx/configure.sh RUN_DIR
#   nginx -p RUN_DIR/ -c RUN_DIR/nginx.conf -e stderr
#
# It copies nginx.conf unchanged and writes the two files it includes; nothing else differs
# between the compose image and the tests. POSIX sh: the image has no Python.
set -eu
run_dir=${1:?usage: configure.sh RUN_DIR}
here=$(cd "$(dirname "$0")" && pwd)
: "${UPSTREAMS:?set UPSTREAMS to the replicas as HOST:PORT, separated by spaces}"
: "${LISTEN:?set LISTEN to a port or ADDRESS:PORT}"

# Passive health checks, per replica: one failed attempt takes it out of rotation for 5 s.
MAX_FAILS=1
FAIL_TIMEOUT=5s

valid() {  # HOST:PORT or a bare port, nothing that could end or open an nginx directive
  case $1 in
    *[!A-Za-z0-9.:_\[\]-]*|'') echo "configure.sh: not an address: '$1'" >&2; exit 2 ;;
  esac
}

mkdir -p "$run_dir/tmp"
cp "$here/nginx.conf" "$run_dir/nginx.conf"
: > "$run_dir/upstreams.conf.new"
count=0
for address in $UPSTREAMS; do
  valid "$address"
  printf 'server %s max_fails=%s fail_timeout=%s;\n' "$address" "$MAX_FAILS" "$FAIL_TIMEOUT" \
    >> "$run_dir/upstreams.conf.new"
  count=$((count + 1))
done
[ "$count" -gt 0 ] || { echo "configure.sh: UPSTREAMS names no replica" >&2; exit 2; }
mv "$run_dir/upstreams.conf.new" "$run_dir/upstreams.conf"
valid "$LISTEN"
printf 'listen %s;\n' "$LISTEN" > "$run_dir/listen.conf"
echo "configure.sh: $count replica(s) behind $LISTEN, in $run_dir" >&2

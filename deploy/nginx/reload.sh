#!/bin/sh
# Changes the balancer's replicas without failing a request: nginx reloads gracefully (new workers
# take new requests with the new list; the old ones finish the requests they hold, then exit), and
# this script returns only when every old worker has exited, so a replica taken out of rotation
# holds no request from the balancer any more and may be stopped. Clients are told to leave their
# keep-alive connections first (the `draining` notice in nginx.conf).
#   UPSTREAMS  the replicas from now on, HOST:PORT separated by spaces (as for configure.sh)
#   LISTEN     what the running nginx listens on (unchanged; the image sets it)
#   NGINX      the nginx binary (default: nginx on PATH)
#
#   UPSTREAMS="service-2:3000 service:3000" sh /etc/classifier-lb/reload.sh /tmp/balancer   # in the lb container
#
# Exit codes: 0 done; 2 a bad UPSTREAMS or a configuration nginx refuses (nothing changed, e.g. a
# host name that does not resolve); 3 the old workers still hold requests after DRAIN_SECONDS.
set -eu
run_dir=${1:?usage: reload.sh RUN_DIR}
here=$(cd "$(dirname "$0")" && pwd)
nginx=${NGINX:-nginx}
# Longer than a request can last behind the balancer (proxy_next_upstream_timeout 30s in nginx.conf).
DRAIN_SECONDS=${DRAIN_SECONDS:-60}
NOTICE_SECONDS=${NOTICE_SECONDS:-2}
master=$(cat "$run_dir/nginx.pid")

workers() {  # the master's children: its worker processes
  for stat in /proc/[0-9]*/stat; do
    # pid (comm) state ppid ...: nginx's comm has no space, so the fields split plainly.
    read -r pid _ _ ppid _ < "$stat" 2>/dev/null || continue
    [ "$ppid" = "$master" ] && echo "$pid"
  done
  return 0
}

# Written and tested beside the running configuration first: a list nginx refuses changes nothing.
sh "$here/configure.sh" "$run_dir/next" 2>/dev/null || { sh "$here/configure.sh" "$run_dir/next"; exit 2; }
if ! checked=$("$nginx" -t -q -p "$run_dir/next/" -c "$run_dir/next/nginx.conf" 2>&1); then
  echo "reload.sh: nginx refuses the new replicas ($UPSTREAMS): $checked" >&2
  exit 2
fi
# The notice (nginx.conf, `draining`): for NOTICE_SECONDS before the reload and until the old workers
# are gone, answers close their connection, so that no client is caught sending on an idle one.
trap 'rm -f "$run_dir/draining"' EXIT
touch "$run_dir/draining"
sleep "$NOTICE_SECONDS"
old=$(workers)
cp "$run_dir/next/upstreams.conf" "$run_dir/upstreams.conf.new"
mv "$run_dir/upstreams.conf.new" "$run_dir/upstreams.conf"
"$nginx" -p "$run_dir/" -c "$run_dir/nginx.conf" -s reload 2>/dev/null

waited=0
for pid in $old; do
  while [ -d "/proc/$pid" ]; do
    if [ "$waited" -ge $((DRAIN_SECONDS * 10)) ]; then
      echo "reload.sh: an old nginx worker still holds requests after ${DRAIN_SECONDS} s" >&2
      exit 3
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
done
echo "reload.sh: in rotation: $UPSTREAMS" >&2

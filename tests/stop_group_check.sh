#!/usr/bin/env bash
# scripts/process-group.sh's stop_group against a process group that, like `cargo lambda
# watch` shutting down, takes a while after SIGTERM to let go of its port: stop_group must
# return only once the group is gone and the port is closed. A plain `kill -TERM` (what
# replay-setup --stop did) returns while the port is still taken.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/process-group.sh
source "$ROOT/scripts/process-group.sh"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
failures=0
check() { if eval "$1"; then echo "ok    $2"; else echo "FAIL  $2"; failures=$((failures + 1)); fi; }

# A listener in its own process group that exits 1.5 s after SIGTERM.
slow_listener() {
  setsid python3 -c '
import signal, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True)
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.5), sys.exit(0)))
while True: time.sleep(0.1)
' >"$1" 2>/dev/null </dev/null &
  echo $!
}
wait_port() { for _ in $(seq 50); do [[ -s $1 ]] && port_open "$(cat "$1")" && return; sleep 0.1; done; return 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pid=$(slow_listener "$tmp/a")
wait_port "$tmp/a"
port=$(cat "$tmp/a")
kill -TERM -- "-$pid"
check "port_open $port" "a plain SIGTERM returns while port $port is still taken (the old --stop)"
stop_group "$pid" "$port" >/dev/null 2>&1 || true

pid=$(slow_listener "$tmp/b")
wait_port "$tmp/b"
port=$(cat "$tmp/b")
start=$SECONDS
check "stop_group $pid $port" "stop_group returns success"
check "! port_open $port" "port $port is closed when stop_group returns"
check "! group_alive $pid" "process group $pid is gone when stop_group returns"
check "((SECONDS - start < 15))" "within its bound"

echo
echo "$failures failed"
((failures == 0))

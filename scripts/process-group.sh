# Sourced by scripts/demo and scripts/replay-setup: stopping a `cargo lambda watch` that
# setsid made a process-group leader (the watch and the function it runs).

# True while process group $1 has a live member (zombies waiting to be reaped do not
# count: they hold no port).
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# Sends SIGTERM to process group $1, then waits until the group is gone and port $2 is
# closed: SIGKILL after 10 s, and gives up (status 1, saying so) after 15 s. Returning
# right after the signal let the next step find the port still taken.
stop_group() {
  local pgid=$1 port=$2 i
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for i in $(seq 150); do
    if ! group_alive "$pgid" && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    ((i == 100)) && kill -KILL -- "-$pgid" 2>/dev/null
    sleep 0.1
  done
  echo "process group $pgid still running or port $port still open after 15 s" >&2
  return 1
}

#!/usr/bin/env bash
# One RabbitMQ node for warren-bench's many-entities scenarios (BENCHMARKS.md, "Many entities"):
# the system node on 127.0.0.1:5672 runs with a file-descriptor limit of 1024, which lets it
# accept only 832 sockets, so 10,000 connections cannot be compared against it. This node starts
# with the limit raised (as the rabbitmq-server package does through systemd's LimitNOFILE=65536).
# Uses Debian's rabbitmq-server; leaves the system node (5672), the reference node
# (../shared/refnode.sh), the cluster (scripts/cluster.sh) and scripts/external-node.sh alone.
#
#   scripts/bench-node.sh start    boots the node unless it runs, waits until it does, prints
#                                  its URL (see below)
#   scripts/bench-node.sh stop     stops it (its data stays)
#   scripts/bench-node.sh status   "up" (exit 0) or "down" (exit 1)
#   scripts/bench-node.sh url      amqp://guest:guest@127.0.0.1:5682/%2f
#   scripts/bench-node.sh pid      the PID of its beam.smp (for warren-bench --rabbitmq-pid)
#   scripts/bench-node.sh limit    the open-file limit the running node got (soft hard)
#   scripts/bench-node.sh ctl ARGS rabbitmqctl ARGS on the node (list_queues, ...)
#   scripts/bench-node.sh reset    stops the node and deletes its directory
#
# The node is warren-bench@localhost: AMQP on 127.0.0.1:5682 (guest/guest), Erlang distribution
# on 25682, no plugins (as warren-bench runs warren-broker: --no-management --no-prometheus),
# otherwise RabbitMQ's defaults; everything in $WARREN_BENCHNODE_DIR (default
# /tmp/warren-benchnode). Before starting it the script asks for `ulimit -n 65536`
# ($WARREN_BENCHNODE_NOFILE); where the hard limit is lower and cannot be raised (a container
# without CAP_SYS_RESOURCE) it takes the hard limit instead, and says so. RabbitMQ allows
# about 90% of that limit, minus some reserved descriptors, for sockets. The node's own cookie,
# environment and start/stop are in scripts/lib/rabbit-node.sh.
set -euo pipefail

LABEL=bench-node
BASE=${WARREN_BENCHNODE_DIR:-/tmp/warren-benchnode}
NODE=warren-bench@localhost
PORT=5682
DIST_PORT=25682
BOOT_TIMEOUT=${WARREN_BENCHNODE_BOOT_TIMEOUT:-120}
NOFILE=${WARREN_BENCHNODE_NOFILE:-65536}
# shellcheck source=lib/rabbit-node.sh
. "$(dirname "$0")/lib/rabbit-node.sh"

node_env() { export RABBITMQ_NODE_PORT=$PORT; }

url() { echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"; }

# The node's beam.smp: the PID file RabbitMQ writes, checked against the process's command line
# (which names the node's HOME).
beam_pid() {
  local pid
  pid=$(cat "$BASE/pid" 2>/dev/null || true)
  [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-home $BASE/home " \
    || return 1
  echo "$pid"
}

prepare() {
  echo '[].' > "$BASE/enabled_plugins"
  cat > "$BASE/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
CONF
}

# Raises this shell's open-file limit (inherited by the node) to $NOFILE, or to the hard limit.
before_boot() {
  if ! ulimit -n "$NOFILE" 2>/dev/null; then
    local hard
    hard=$(ulimit -Hn)
    echo "bench-node: cannot raise the open-file limit to $NOFILE (hard limit $hard); using $hard" >&2
    ulimit -n "$hard"
  fi
}

case "${1:-}" in
  pid)
    beam_pid || { echo "bench-node: $NODE is not running" >&2; exit 1; }
    ;;
  limit)
    pid=$(beam_pid) || { echo "bench-node: $NODE is not running" >&2; exit 1; }
    awk '/^Max open files/ {print $4, $5}' "/proc/$pid/limits"
    ;;
  ctl)
    shift
    ctl "$@"
    ;;
  *)
    node_command "start|stop|status|url|pid|limit|ctl ARGS...|reset" "$@"
    ;;
esac

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
# about 90% of that limit, minus some reserved descriptors, for sockets. A separate Erlang cookie
# lives in $DIR/home (HOME for the node and rabbitmqctl), so neither the system node's cookie nor
# root's is touched.
set -euo pipefail

BASE=${WARREN_BENCHNODE_DIR:-/tmp/warren-benchnode}
NODE=warren-bench@localhost
PORT=5682
DIST_PORT=25682
NOFILE=${WARREN_BENCHNODE_NOFILE:-65536}
SB=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | tail -1 || true)
if [ -z "$SB" ]; then
  echo "bench-node: Debian's rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
  exit 1
fi

env_for_node() {
  export HOME=$BASE/home
  export RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_MNESIA_BASE=$BASE/mnesia RABBITMQ_LOG_BASE=$BASE/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf
  export RABBITMQ_PID_FILE=$BASE/pid ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() { (env_for_node && "$SB/rabbitmqctl" -n "$NODE" "$@"); }

amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; }

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
  mkdir -p "$BASE/home" "$BASE/mnesia" "$BASE/log"
  chmod 700 "$BASE/home"
  if [ ! -s "$BASE/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  echo '[].' > "$BASE/enabled_plugins"
  cat > "$BASE/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
CONF
  : > "$BASE/rabbitmq-env.conf"
}

# Raises this shell's open-file limit (inherited by the node) to $NOFILE, or to the hard limit.
raise_nofile() {
  if ! ulimit -n "$NOFILE" 2>/dev/null; then
    local hard
    hard=$(ulimit -Hn)
    echo "bench-node: cannot raise the open-file limit to $NOFILE (hard limit $hard); using $hard" >&2
    ulimit -n "$hard"
  fi
}

case "${1:-}" in
  start)
    prepare
    if ! ctl ping >/dev/null 2>&1; then
      (raise_nofile && env_for_node && exec setsid nohup "$SB/rabbitmq-server" >> "$BASE/log/stdout.log" 2>&1 < /dev/null) &
    fi
    until=$((SECONDS + ${WARREN_BENCHNODE_BOOT_TIMEOUT:-120}))
    until amqp_up; do
      [ $SECONDS -lt $until ] || { echo "bench-node: $NODE did not come up: see $BASE/log" >&2; exit 1; }
      sleep 1
    done
    ctl await_startup --timeout $((until - SECONDS > 5 ? until - SECONDS : 5)) >/dev/null \
      || { echo "bench-node: $NODE did not finish booting: see $BASE/log" >&2; exit 1; }
    url
    ;;
  stop)
    ctl stop >/dev/null 2>&1 || true
    ;;
  status)
    if amqp_up && ctl ping >/dev/null 2>&1; then echo up; else echo down; exit 1; fi
    ;;
  url)
    url
    ;;
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
  reset)
    "$0" stop
    rm -rf "$BASE"
    ;;
  *)
    echo "usage: $0 start|stop|status|url|pid|limit|ctl ARGS...|reset" >&2
    exit 2
    ;;
esac

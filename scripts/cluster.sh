#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this one machine, for Warren's cluster tests (tests/tests/cluster.rs)
# and for trying scale-out by hand (docs/scale-out.md). Uses Debian's rabbitmq-server; leaves the
# system node on 127.0.0.1:5672 alone.
#
#   scripts/cluster.sh start         boots the three nodes (in parallel), joins 2 and 3 to 1, waits
#                                    until all three run; prints the AMQP URLs (one per line)
#   scripts/cluster.sh stop          stops the three nodes (their data stays)
#   scripts/cluster.sh status        "up" when all three run as one cluster (exit 0), else "down"
#   scripts/cluster.sh urls          the AMQP URLs, one per line
#   scripts/cluster.sh kill N        kill -9 node N (1..3), as a crash would
#   scripts/cluster.sh start-node N  starts node N again and waits until it runs
#   scripts/cluster.sh ctl N ARGS..  rabbitmqctl ARGS on node N (list_queues, list_consumers, ...)
#   scripts/cluster.sh reset         stops the nodes and deletes their data
#
# Node N (1..3) is warren-cN@localhost: AMQP on 127.0.0.1:569N (guest/guest), Erlang
# distribution on 2569N, data and logs in $WARREN_CLUSTER_DIR/nN (default /tmp/warren-cluster).
# Every command is idempotent: `start` on a running cluster only prints the URLs.
#
# The nodes and rabbitmqctl share an Erlang cookie in $WARREN_CLUSTER_DIR/home/.erlang.cookie
# (HOME points there for both), so neither the system node's cookie nor root's is touched.
set -euo pipefail

BASE=${WARREN_CLUSTER_DIR:-/tmp/warren-cluster}
NODES=(1 2 3)
SB=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | tail -1 || true)
if [ -z "$SB" ]; then
  echo "cluster: Debian's rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
  exit 1
fi

node_name() { echo "warren-c$1@localhost"; }
amqp_port() { echo $((5690 + $1)); }
dist_port() { echo $((25690 + $1)); }
url_of() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }

# The environment rabbitmq-server and rabbitmqctl need for node $1.
env_for_node() {
  local n=$1 dir=$BASE/n$1
  export HOME=$BASE/home
  export RABBITMQ_NODENAME=$(node_name "$n") RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$(amqp_port "$n") RABBITMQ_DIST_PORT=$(dist_port "$n")
  export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
  export RABBITMQ_PID_FILE=$dir/pid ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# rabbitmqctl against node $1, in a subshell so the environment stays local.
ctl() {
  local n=$1
  shift
  (env_for_node "$n" && "$SB/rabbitmqctl" -n "$(node_name "$n")" "$@")
}

amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/"$(amqp_port "$1")") 2>/dev/null; }

prepare() {
  local n
  mkdir -p "$BASE/home"
  chmod 700 "$BASE/home"
  if [ ! -s "$BASE/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  for n in "${NODES[@]}"; do
    local dir=$BASE/n$n
    mkdir -p "$dir/mnesia" "$dir/log"
    echo '[].' > "$dir/enabled_plugins"
    cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
cluster_partition_handling = pause_minority
CONF
    : > "$dir/rabbitmq-env.conf"
  done
}

# Starts node $1 in the background unless it runs; does not wait.
launch() {
  local n=$1
  if ctl "$n" ping >/dev/null 2>&1; then return 0; fi
  (env_for_node "$n" && exec setsid nohup "$SB/rabbitmq-server" >> "$BASE/n$n/log/stdout.log" 2>&1 < /dev/null) &
}

# Waits until node $1 runs its application (at most $2 seconds).
await_node() {
  local n=$1 timeout=${2:-90}
  local until=$((SECONDS + timeout))
  while ! ctl "$n" ping >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || { echo "cluster: node $n did not come up: see $BASE/n$n/log" >&2; return 1; }
    sleep 1
  done
  ctl "$n" await_startup --timeout $((until - SECONDS > 5 ? until - SECONDS : 5)) >/dev/null \
    || { echo "cluster: node $n did not finish booting: see $BASE/n$n/log" >&2; return 1; }
}

# Whether node $1 counts node 1 among the members of its cluster.
joined() {
  [ "$1" = 1 ] && return 0
  ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name 1)\""
}

join() {
  local n=$1
  joined "$n" && return 0
  echo "cluster: joining node $n to $(node_name 1)" >&2
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster "$(node_name 1)" >/dev/null
  ctl "$n" start_app >/dev/null
}

# Whether all three nodes run, each knowing all three as running members.
all_running() {
  local status n
  status=$(ctl 1 cluster_status --formatter json 2>/dev/null) || return 1
  for n in "${NODES[@]}"; do
    amqp_up "$n" || return 1
    echo "$status" | tr -d ' \n' | grep -o '"running_nodes":\[[^]]*\]' | grep -q "\"$(node_name "$n")\"" || return 1
  done
}

urls() {
  local n
  for n in "${NODES[@]}"; do url_of "$n"; done
}

case "${1:-}" in
  start)
    prepare
    for n in "${NODES[@]}"; do launch "$n"; done
    for n in "${NODES[@]}"; do await_node "$n" "${WARREN_CLUSTER_BOOT_TIMEOUT:-120}"; done
    for n in 2 3; do join "$n"; done
    until=$((SECONDS + 60))
    until all_running; do
      [ $SECONDS -lt $until ] || { echo "cluster: the nodes run but do not form one cluster" >&2; exit 1; }
      sleep 1
    done
    urls
    ;;
  stop)
    for n in "${NODES[@]}"; do ctl "$n" stop >/dev/null 2>&1 || true; done
    ;;
  status)
    if all_running; then echo up; else echo down; exit 1; fi
    ;;
  urls)
    urls
    ;;
  kill)
    n=${2:?usage: $0 kill N}
    pid=$(cat "$BASE/n$n/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      echo "cluster: killed node $n (pid $pid)" >&2
    else
      echo "cluster: node $n is not running" >&2
    fi
    ;;
  start-node)
    n=${2:?usage: $0 start-node N}
    prepare
    launch "$n"
    await_node "$n" "${WARREN_CLUSTER_BOOT_TIMEOUT:-120}"
    url_of "$n"
    ;;
  ctl)
    n=${2:?usage: $0 ctl N ARGS...}
    shift 2
    ctl "$n" "$@"
    ;;
  reset)
    "$0" stop
    rm -rf "$BASE"
    ;;
  *)
    echo "usage: $0 start|stop|status|urls|kill N|start-node N|ctl N ARGS...|reset" >&2
    exit 2
    ;;
esac

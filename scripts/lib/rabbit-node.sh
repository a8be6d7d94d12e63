# A standalone RabbitMQ node of the test and benchmark set-up (sourced by
# scripts/external-node.sh and scripts/bench-node.sh): its environment, rabbitmqctl, booting and
# waiting, and the start|stop|status|url|reset commands they share.
#
# The sourcing script sets LABEL (for messages), BASE (the node's directory), NODE, PORT (the
# port that answers once it is up), DIST_PORT, BOOT_TIMEOUT (seconds), and defines `prepare`
# (writes its configuration under $BASE) and `url`; it may define `node_env` (more environment
# for the node) and `before_boot` (runs in the node's shell just before it starts, e.g. ulimit).
# Each node keeps its own Erlang cookie in $BASE/home (HOME for the node and rabbitmqctl), so
# neither the system node's cookie nor root's is touched.

SB=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | tail -1 || true)
if [ -z "$SB" ]; then
  echo "$LABEL: Debian's rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
  exit 1
fi

env_for_node() {
  export HOME=$BASE/home
  export RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_MNESIA_BASE=$BASE/mnesia RABBITMQ_LOG_BASE=$BASE/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf
  export RABBITMQ_PID_FILE=$BASE/pid ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
  if declare -F node_env >/dev/null; then node_env; fi
}

ctl() { (env_for_node && "$SB/rabbitmqctl" -n "$NODE" "$@"); }

port_up() { (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; }

# The node's directories and its own Erlang cookie.
make_home() {
  mkdir -p "$BASE/home" "$BASE/mnesia" "$BASE/log"
  chmod 700 "$BASE/home"
  if [ ! -s "$BASE/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  : > "$BASE/rabbitmq-env.conf"
}

# Boots the node unless it runs, waits until $PORT answers and the node has finished booting,
# and prints its URL.
start_node() {
  make_home
  prepare
  if ! ctl ping >/dev/null 2>&1; then
    (
      if declare -F before_boot >/dev/null; then before_boot; fi
      env_for_node && exec setsid nohup "$SB/rabbitmq-server" >> "$BASE/log/stdout.log" 2>&1 < /dev/null
    ) &
  fi
  local deadline=$((SECONDS + BOOT_TIMEOUT))
  until port_up; do
    [ $SECONDS -lt $deadline ] || { echo "$LABEL: $NODE did not come up: see $BASE/log" >&2; exit 1; }
    sleep 1
  done
  ctl await_startup --timeout $((deadline - SECONDS > 5 ? deadline - SECONDS : 5)) >/dev/null \
    || { echo "$LABEL: $NODE did not finish booting: see $BASE/log" >&2; exit 1; }
  url
}

# The commands every node script has; `usage` is the script's list of commands.
node_command() {
  local usage=$1
  shift
  case "${1:-}" in
    start) start_node ;;
    stop) ctl stop >/dev/null 2>&1 || true ;;
    status) if port_up && ctl ping >/dev/null 2>&1; then echo up; else echo down; exit 1; fi ;;
    url) url ;;
    reset)
      ctl stop >/dev/null 2>&1 || true
      rm -rf "$BASE"
      ;;
    *)
      echo "usage: $0 $usage" >&2
      exit 2
      ;;
  esac
}

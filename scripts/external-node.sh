#!/usr/bin/env bash
# One RabbitMQ node that logs clients in by their TLS certificate (SASL EXTERNAL, the
# rabbitmq_auth_mechanism_ssl plugin), for the EXTERNAL test in tests/tests/tls.rs, which runs the
# same scenario against Warren and this node. Uses Debian's rabbitmq-server; leaves the system
# node (5672), the reference node (../shared/refnode.sh) and the cluster (scripts/cluster.sh) alone.
#
#   scripts/external-node.sh start    boots the node unless it runs, waits until it does, prints
#                                     its URL (see below)
#   scripts/external-node.sh stop     stops it (its data and certificates stay)
#   scripts/external-node.sh status   "up" (exit 0) or "down" (exit 1)
#   scripts/external-node.sh url      the URL the tests read from WARREN_TEST_EXTERNAL_URL:
#                                     amqps://localhost:5681/%2f?cacertfile=$DIR/tls/ca.pem
#   scripts/external-node.sh reset    stops the node and deletes its directory
#
# The node is warren-ext@localhost: AMQPS only, on 127.0.0.1:5681 (no plain AMQP listener),
# Erlang distribution on 25681, everything in $WARREN_EXTNODE_DIR (default /tmp/warren-extnode).
# TLS as RabbitMQ's ssl_options: verify_peer, fail_if_no_peer_cert, ssl_cert_login_from =
# common_name; auth_mechanisms EXTERNAL and PLAIN. The script makes, with openssl on first start,
# a CA ($DIR/tls/ca.pem and its key ca.key, with which the tests sign client certificates) and the
# server's certificate for localhost / 127.0.0.1. Definitions loaded at boot ($DIR/definitions.json)
# create the user `warren-external`, with no password (only EXTERNAL can log it in) and full
# permissions on vhost "/". The node's own cookie, environment and start/stop are in
# scripts/lib/rabbit-node.sh.
#
# Cheap to boot: one node, one plugin, no management; about 10 s on 2 cores.
set -euo pipefail

LABEL=external-node
BASE=${WARREN_EXTNODE_DIR:-/tmp/warren-extnode}
NODE=warren-ext@localhost
PORT=5681
DIST_PORT=25681
BOOT_TIMEOUT=${WARREN_EXTNODE_BOOT_TIMEOUT:-120}
USER_NAME=warren-external
# shellcheck source=lib/rabbit-node.sh
. "$(dirname "$0")/lib/rabbit-node.sh"

url() { echo "amqps://localhost:$PORT/%2f?cacertfile=$BASE/tls/ca.pem"; }

# The CA and the server certificate (X.509 v3: rustls refuses v1), made once.
certificates() {
  local tls=$BASE/tls
  [ -s "$tls/server.pem" ] && return 0
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=warren-extnode-ca" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile server.ext -out server.pem
  ) >/dev/null 2>&1 || { echo "external-node: openssl failed in $tls" >&2; rm -f "$tls/server.pem"; return 1; }
  chmod 644 "$tls"/*
}

prepare() {
  certificates
  echo '[rabbitmq_auth_mechanism_ssl].' > "$BASE/enabled_plugins"
  cat > "$BASE/definitions.json" <<JSON
{"vhosts": [{"name": "/"}],
 "users": [{"name": "$USER_NAME", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}],
 "permissions": [{"user": "$USER_NAME", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]}
JSON
  cat > "$BASE/rabbitmq.conf" <<CONF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$PORT
ssl_options.cacertfile = $BASE/tls/ca.pem
ssl_options.certfile = $BASE/tls/server.pem
ssl_options.keyfile = $BASE/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_cert_login_from = common_name
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
load_definitions = $BASE/definitions.json
CONF
}

node_command "start|stop|status|url|reset" "$@"

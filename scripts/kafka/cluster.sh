#!/usr/bin/env bash
# Apache Kafka test clusters (KRaft, combined broker+controller nodes) on 127.0.0.1: one node
# by default, or several with KFERRY_KAFKA_BROKERS=N (see "Multi-broker clusters" below).
#
#   scripts/kafka/cluster.sh start NAME PORT [VERSION]   PLAINTEXT on PORT, CONTROLLER on PORT+1
#       (KFERRY_KAFKA_AUTHORIZER=1 in the environment: with an authorizer, so ACLs work;
#       KFERRY_KAFKA_SECURE=1: also SSL with client certificates (mTLS) on PORT+2, SASL_SSL
#       with SCRAM-SHA-512 and PLAIN on PORT+3, SASL_PLAINTEXT with OAUTHBEARER on PORT+4)
#   scripts/kafka/cluster.sh stop NAME                   TERM, then KILL; removes the data dir
#   scripts/kafka/cluster.sh restart NAME                TERM, then KILL, and start again with
#       the data kept (same port, version and authorizer setting as the first start)
#   scripts/kafka/cluster.sh stop-all                    every cluster under the run dir
#   scripts/kafka/cluster.sh status                      one line per known cluster
#   scripts/kafka/cluster.sh stop-node NAME N            multi-broker only: TERM (then KILL) node N
#   scripts/kafka/cluster.sh kill-node NAME N            multi-broker only: SIGKILL node N
#   scripts/kafka/cluster.sh start-node NAME N           multi-broker only: start node N again
#       on its data (waits until it answers metadata and is listed, i.e. registered and unfenced)
#
# Each cluster lives in ${KFERRY_RUN_DIR:-/tmp/kferry-kafka}/NAME (config, data/, broker.log).
# `start` prints the bootstrap address on stdout once the broker answers a metadata request;
# starting a NAME that already runs on the same PORT, VERSION and authorizer setting is a
# no-op success.
# Environment: KFERRY_KAFKA_START_TIMEOUT (s, default 90), KFERRY_KAFKA_STOP_TIMEOUT (s,
# default 30), KFERRY_KAFKA_JAVA_OPTS (extra JVM options), KFERRY_CACHE (see fetch.sh),
# KFERRY_KAFKA_FEATURES (single-node clusters: `--feature NAME=LEVEL` at format time, e.g.
# "transaction.version=1"), KFERRY_KAFKA_AUTHORIZER=1 (start with KRaft's StandardAuthorizer, see write_server_properties;
# default 0: no authorizer, so ACL requests fail with SECURITY_DISABLED),
# KFERRY_KAFKA_SECURE=1 (the secured listeners above; see write_secure_properties. The test
# CA, certificates and the SASL users' passwords are written to RUN_DIR/NAME/certs).
#
# Multi-broker clusters (KFERRY_KAFKA_BROKERS=N, N from 2 to 9, read by `start`, which starts
# every node of a cluster and waits until each lists all N, within the start timeout):
#   N combined broker+controller nodes, node ids 1..N, a static KRaft quorum of all N
#   (controller.quorum.voters, on 3.9 and 4.x alike), JVM heap -Xmx384m each. Node i uses
#       PORT+10*(i-1)      PLAINTEXT   clients (advertised, see the proxy below)
#       PORT+10*(i-1)+1    CONTROLLER  the KRaft quorum
#       PORT+10*(i-1)+5    INTERNAL    broker to broker replication (always advertised as is)
#   e.g. `KFERRY_KAFKA_BROKERS=3 cluster.sh start src 24000 4.4.0`: clients on 24000, 24010,
#   24020; `start` prints all of them, comma-separated. Defaults: replication factor min(N,3),
#   min.insync.replicas 2 (1 when N is 2), the same for __consumer_offsets (12 partitions),
#   __transaction_state (12 partitions) and, on 4.x, the share-group state topic;
#   broker.session.timeout.ms 6000 (a SIGKILLed node is fenced and its partitions get new
#   leaders some 6 to 11 s later; a TERM hands them over at once, by controlled shutdown).
#   Files: RUN_DIR/NAME/{port,version,brokers,...} and per node RUN_DIR/NAME/node-I
#   (server.properties, data/, broker.log, pid). `stop`, `restart`, `status` and `stop-all`
#   handle the whole cluster (its nodes stopped all at once).
#   KFERRY_KAFKA_UNCLEAN_LEADER_ELECTION=1: unclean.leader.election.enable=true (default false).
#   KFERRY_KAFKA_PROXY_PORT_BASE=P: node i advertises PLAINTEXT 127.0.0.1:(P+i-1) instead of
#   its own port, for a proxy in front of each node (scripts/kafka/wan.sh); it still listens on
#   its own port, and replication between nodes keeps the direct INTERNAL listener. Also
#   allowed with N=1 (one node in this layout). KFERRY_KAFKA_SECURE=1 is single-node only.
#   These settings are recorded at `start`; restart, start-node etc. reuse them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Absolute, because the path ends up in the JVM flags and log config of each broker.
run_dir="$(realpath -m "${KFERRY_RUN_DIR:-/tmp/kferry-kafka}")"
start_timeout="${KFERRY_KAFKA_START_TIMEOUT:-90}"
authorizer="${KFERRY_KAFKA_AUTHORIZER:-0}"
secure="${KFERRY_KAFKA_SECURE:-0}"
stop_timeout="${KFERRY_KAFKA_STOP_TIMEOUT:-30}"
brokers="${KFERRY_KAFKA_BROKERS:-1}"
proxy_base="${KFERRY_KAFKA_PROXY_PORT_BASE:-}"
unclean="${KFERRY_KAFKA_UNCLEAN_LEADER_ELECTION:-0}"

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '5,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The JVM carries -Dkferry.cluster=<cluster dir>, so a pid is only ever treated as ours while
# its command line says so: this guards against pid reuse and counts zombies as dead.
is_ours() {
  local pid="$1" dir="$2"
  # grep -z reads the NUL-separated arguments itself: no pipe that pipefail could trip over.
  grep -qzxF -- "-Dkferry.cluster=$dir" "/proc/$pid/cmdline" 2>/dev/null
}

# Alive and not a zombie. For the JVM just launched: until setsid has exec'd java, its
# command line is still this script's, so is_ours would wrongly report it dead.
proc_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

running_pid() {
  local dir="$1" pid
  [[ -f "$dir/pid" ]] || return 1
  pid="$(cat "$dir/pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" "$dir" && echo "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:PORT (bash's /dev/tcp: no extra
# tools needed on a fresh machine).
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The broker is ready once a metadata request lists it: the data-plane listener accepts
# requests only after the node registered with its controller and was unfenced.
answers_metadata() {
  local port="$1" out
  # Connect first: kcat against a closed port sits in librdkafka's reconnect backoff for up
  # to its metadata timeout, which would add seconds to every start.
  port_busy "$port" || return 1
  out="$(timeout 10 kcat -b "127.0.0.1:$port" -L -m 3 2>/dev/null)" || return 1
  grep -q "broker 1 at 127.0.0.1:$port" <<<"$out"
}

# The first errors explain a failed start better than the shutdown noise that follows them,
# so show those, then the end of the log, then whatever the JVM printed itself.
show_logs() {
  local dir="$1"
  if [[ -s "$dir/broker.log" ]]; then
    log "---- first errors in $dir/broker.log ----"
    grep -m 15 -E '\] (ERROR|FATAL) ' "$dir/broker.log" >&2 || true
    log "---- last lines of $dir/broker.log ----"
    tail -n 25 "$dir/broker.log" >&2
  fi
  if [[ -s "$dir/stdout.log" ]]; then
    log "---- last lines of $dir/stdout.log ----"
    tail -n 25 "$dir/stdout.log" >&2
  fi
}

# Kafka cluster ids are 16 random bytes in unpadded URL-safe base64. One starting with '-'
# would read as an option on the storage tool's command line, so draw again.
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

write_server_properties() {
  local dir="$1" port="$2" version="$3" authorizer="$4" cport=$(($2 + 1))
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka/cluster.sh: one combined broker+controller, static quorum.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport$(secure_listeners "$port")
advertised.listeners=PLAINTEXT://127.0.0.1:$port$(secure_listeners "$port")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$([[ "$secure" == 1 ]] && echo ",MTLS:SSL,SASLSSL:SASL_SSL,OAUTH:SASL_PLAINTEXT")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
# Tests create every topic they use; a typo must fail, not silently create a topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# Internal topics default to RF 3, which a single node cannot host.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Consumer groups should not wait 3 s before their first rebalance.
group.initial.rebalance.delay.ms=0
EOF
  # Share groups (KIP-932) exist from 4.0 on; 3.9 would only warn about unknown keys.
  if [[ "${version%%.*}" -ge 4 ]]; then
    cat >>"$dir/server.properties" <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  fi
  # ACLs (Create/Describe/DeleteAcls) need an authorizer; without one the broker answers
  # SECURITY_DISABLED. Every listener is PLAINTEXT, so every client, the broker side of this
  # node and its controller side all authenticate as User:ANONYMOUS: as a super user it is
  # allowed everything (also before the authorizer loaded the ACLs from the metadata log), so
  # ACLs are stored and described but never deny a request.
  if [[ "$authorizer" == 1 ]]; then
    cat >>"$dir/server.properties" <<EOF
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
EOF
  fi
  if [[ "$secure" == 1 ]]; then write_secure_properties "$dir"; fi
}

# The secured listeners' part of `listeners` (empty unless KFERRY_KAFKA_SECURE=1).
secure_listeners() {
  local port="$1"
  [[ "$secure" == 1 ]] || return 0
  echo ",MTLS://127.0.0.1:$((port + 2)),SASLSSL://127.0.0.1:$((port + 3)),OAUTH://127.0.0.1:$((port + 4))"
}

# Listener MTLS (SSL) requires a client certificate signed by the test CA. SASLSSL (SASL_SSL)
# takes SCRAM-SHA-512 (users created at format time, see format_args) and PLAIN (users listed
# in its JAAS config). OAUTH (SASL_PLAINTEXT) takes OAUTHBEARER, checked by Kafka's unsecured
# JWT validator (unsigned tokens with alg "none": test only), and SCRAM-SHA-256. Every SASL
# session must re-authenticate (KIP-368) within connections.max.reauth.ms
# (KFERRY_KAFKA_REAUTH_MS, default 10 s: short, so tests exercise re-authentication).
write_secure_properties() {
  local dir="$1" certs="$1/certs"
  cat >>"$dir/server.properties" <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$certs/broker.p12
ssl.keystore.password=$(cat "$certs/keystore.password")
ssl.key.password=$(cat "$certs/keystore.password")
ssl.truststore.type=PEM
ssl.truststore.location=$certs/ca.pem
listener.name.mtls.ssl.client.auth=required
listener.name.saslssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.saslssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.saslssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_plainuser="$(cat "$certs/plain.password")";
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER,SCRAM-SHA-256
listener.name.oauth.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler
connections.max.reauth.ms=${KFERRY_KAFKA_REAUTH_MS:-10000}
EOF
}

# A throwaway PKI made with openssl in DIR/certs: ca.pem (the test CA), broker.p12 (the
# broker's key and certificate for localhost and 127.0.0.1, PKCS#12), client.pem/client.key
# (a client certificate for mTLS), other-ca.pem (a CA nobody trusts, for the "not trusted"
# case), and random passwords: keystore.password, scram.password (user kferry, SCRAM-SHA-512
# and SCRAM-SHA-256), plain.password (user plainuser, PLAIN). Random per start, so a test can
# grep kferry's output for every one of them.
make_test_pki() {
  local certs="$1/certs" name
  command -v openssl >/dev/null || die "openssl is required for KFERRY_KAFKA_SECURE=1 (scripts/setup installs it)"
  mkdir -p "$certs"
  chmod 700 "$certs"
  for name in keystore scram plain; do
    head -c 18 /dev/urandom | base64 | tr '+/' 'xy' >"$certs/$name.password"
  done
  if ! (
    cd "$certs"
    set -e
    openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=kferry test CA" \
      -keyout ca.key -out ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=kferry untrusted CA" \
      -keyout other-ca.key -out other-ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >broker.ext
    openssl x509 -req -days 3 -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "file:keystore.password" -out broker.p12
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kferry-client" -keyout client.key -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -days 3 -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile client.ext -out client.pem
  ) >"$1/pki.log" 2>&1; then
    tail -n 20 "$1/pki.log" >&2
    die "generating the test certificates failed"
  fi
}

# Extra storage-tool arguments: the SCRAM users of the secured listeners (KIP-900: created in
# the bootstrap metadata, so they exist before the broker takes its first connection).
format_args() {
  local dir="$1" password feature
  # KFERRY_KAFKA_FEATURES="transaction.version=1 ...": feature levels other than the
  # release's defaults (a 4.x cluster speaking the 3.x transaction protocol, say).
  for feature in ${KFERRY_KAFKA_FEATURES:-}; do
    printf '%s\n' --feature "$feature"
  done
  [[ "$secure" == 1 ]] || return 0
  password="$(cat "$dir/certs/scram.password")"
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=kferry,password=\"$password\"]" \
    --add-scram "SCRAM-SHA-256=[name=kferry,password=\"$password\"]"
}

# Kafka 4.x logs through log4j2, 3.9 through reload4j (log4j 1.2 API): pick by the jars.
# Either way the broker log goes to DIR/broker.log, never to stdout. Prints the JVM flag.
write_log_config() {
  local dir="$1" libs="$2"
  if compgen -G "$libs/log4j-core-*.jar" >/dev/null; then
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
    echo "-Dlog4j2.configurationFile=$dir/log4j2.properties"
  else
    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/broker.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
EOF
    echo "-Dlog4j.configuration=file:$dir/log4j.properties"
  fi
}

# Sends SIGNAL (TERM or KILL) to the JVMs of all the given dirs at once (a single node's
# cluster dir, or multi-broker node dirs), waits up to the stop timeout for all of them, then
# KILLs what is left. Leaves data, logs and config.
stop_jvms() {
  local sig="$1" dir pid waited=0 i alive
  shift
  local -a dirs=() pids=()
  for dir in "$@"; do
    if pid="$(running_pid "$dir")"; then
      kill "-$sig" "$pid" 2>/dev/null || true
      dirs+=("$dir")
      pids+=("$pid")
    else
      rm -f "$dir/pid"
    fi
  done
  while :; do
    alive=0
    for i in "${!dirs[@]}"; do is_ours "${pids[$i]}" "${dirs[$i]}" && alive=1; done
    ((alive == 1 && waited < stop_timeout * 10)) || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for i in "${!dirs[@]}"; do
    dir="${dirs[$i]}"
    pid="${pids[$i]}"
    if is_ours "$pid" "$dir"; then
      log "${dir#"$run_dir"/} (pid $pid) ignored $sig for ${stop_timeout}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      while is_ours "$pid" "$dir"; do sleep 0.1; done
    fi
    if [[ "$sig" == KILL ]]; then
      log "killed ${dir#"$run_dir"/} (pid $pid)"
    else
      log "stopped ${dir#"$run_dir"/} (pid $pid)"
    fi
    rm -f "$dir/pid"
  done
}

# Sends TERM, waits up to the stop timeout, then KILLs. Leaves data, logs and config.
# A multi-broker cluster: all its nodes at once (one at a time, the last ones would wait for
# a quorum that is already gone).
stop_broker() {
  local dir="$run_dir/$1"
  if is_multi "$dir"; then
    local -a nodes
    mapfile -t nodes < <(node_dirs "$dir")
    stop_jvms TERM "${nodes[@]}"
  else
    stop_jvms TERM "$dir"
  fi
}

# Stops the broker and removes its data. Leaves logs and config for post-mortem.
stop_cluster() {
  local dir="$run_dir/$1"
  stop_broker "$1"
  rm -rf "${run_dir:?}/$1/data"
  if is_multi "$dir"; then rm -rf "${dir:?}"/node-*/data; fi
}

# Checks `start`'s arguments and tools (single-node and multi-broker alike).
start_cluster_checks() {
  local name="$1" port="$2" version="$3"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $name"
  if ! [[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] || ((port >= 65535)); then die "bad port: $port"; fi
  [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad Kafka version: $version"
  [[ "$authorizer" == [01] ]] || die "KFERRY_KAFKA_AUTHORIZER must be 0 or 1, not: $authorizer"
  [[ "$secure" == [01] ]] || die "KFERRY_KAFKA_SECURE must be 0 or 1, not: $secure"
  command -v java >/dev/null || die "java is required"
  command -v kcat >/dev/null || die "kcat is required (scripts/setup installs it)"
}

start_cluster() {
  local name="$1" port="$2" version="$3" dir="$run_dir/$1" pid libs
  start_cluster_checks "$name" "$port" "$version"
  if is_multi "$dir"; then
    local nd
    while read -r nd; do
      running_pid "$nd" >/dev/null && die "$name runs as a multi-broker cluster; stop it first"
    done < <(node_dirs "$dir")
  fi

  if pid="$(running_pid "$dir")"; then
    if [[ "$(cat "$dir/port" 2>/dev/null)" == "$port" && "$(cat "$dir/version" 2>/dev/null)" == "$version" &&
      "$(cat "$dir/authorizer" 2>/dev/null || echo 0)" == "$authorizer" &&
      "$(cat "$dir/secure" 2>/dev/null || echo 0)" == "$secure" ]]; then
      wait_ready "$name" "$port" "$pid" "$SECONDS"
      log "$name already running (Kafka $version, pid $pid) on 127.0.0.1:$port"
      echo "127.0.0.1:$port"
      return 0
    fi
    die "$name already runs (pid $pid) with port $(cat "$dir/port") / Kafka $(cat "$dir/version")" \
      "/ authorizer $(cat "$dir/authorizer" 2>/dev/null || echo 0); stop it first"
  fi

  ports_free "$name" "$port"
  libs="$("$here/fetch.sh" "$version")"
  rm -rf "$dir"
  mkdir -p "$dir/data"
  echo "$port" >"$dir/port"
  echo "$version" >"$dir/version"
  echo "$authorizer" >"$dir/authorizer"
  echo "$secure" >"$dir/secure"
  if [[ "$secure" == 1 ]]; then make_test_pki "$dir"; fi
  launch "$name" "$port" "$version" "$libs" fresh
}

# Fail fast instead of letting the broker die on bind, or worse, kcat finding another
# broker on that port and taking it for ours.
ports_free() {
  local name="$1" port="$2" p
  local -a ports=("$port" "$((port + 1))")
  if [[ "$secure" == 1 ]]; then ports+=("$((port + 2))" "$((port + 3))" "$((port + 4))"); fi
  for p in "${ports[@]}"; do
    port_busy "$p" && die "port 127.0.0.1:$p is already in use; cannot start $name"
  done
  return 0
}

# Writes the config files, formats the storage when MODE is fresh (restart: the data dir
# is kept as it is), starts the JVM and waits until it answers. Prints the bootstrap address.
launch() {
  local name="$1" port="$2" version="$3" libs="$4" mode="$5" dir="$run_dir/$1" log_flag
  write_server_properties "$dir" "$port" "$version" "$authorizer"
  log_flag="$(write_log_config "$dir" "$libs")"

  local -a jvm=(-Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "$log_flag")
  if [[ -n "${KFERRY_KAFKA_JAVA_OPTS:-}" ]]; then
    local -a extra
    read -r -a extra <<<"$KFERRY_KAFKA_JAVA_OPTS"
    jvm+=("${extra[@]}")
  fi

  # The storage tool (kafka.tools.StorageTool on both 3.9 and 4.x) writes meta.properties
  # and the bootstrap metadata; a static quorum needs no --standalone/--initial-controllers.
  local -a extra_format
  mapfile -t extra_format < <(format_args "$dir")
  if [[ "$mode" == fresh ]] && ! java "${jvm[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
    -t "$(random_cluster_id)" -c "$dir/server.properties" ${extra_format[@]+"${extra_format[@]}"} \
    >"$dir/format.log" 2>&1; then
    tail -n 40 "$dir/format.log" >&2
    rm -rf "$dir/data"
    die "formatting the storage of $name failed"
  fi

  local started="$SECONDS"
  # setsid: own session, so a Ctrl-C aimed at the test run reaches the trap that stops the
  # broker cleanly rather than the JVM directly. This script has no job control, so setsid
  # execs java in place and $! is the JVM's pid. stdout.log is appended to: after a restart
  # it still holds what the earlier runs printed.
  setsid java "${jvm[@]}" "-Dkferry.cluster=$dir" -cp "$libs/*" kafka.Kafka \
    "$dir/server.properties" >>"$dir/stdout.log" 2>&1 </dev/null &
  echo "$!" >"$dir/pid"

  wait_ready "$name" "$port" "$!" "$started" "$mode"
  local with="" verb=started
  [[ "$authorizer" == 1 ]] && with=", StandardAuthorizer"
  [[ "$secure" == 1 ]] && with="$with, secured listeners on $((port + 2))-$((port + 4))"
  [[ "$mode" == fresh ]] || verb="restarted"
  log "$verb $name (Kafka $version$with, pid $(cat "$dir/pid")) on 127.0.0.1:$port" \
    "in $((SECONDS - started))s; logs in $dir"
  echo "127.0.0.1:$port"
}

# Bounded wait for metadata; on timeout or early death, show the logs and clean up (after a
# restart the data stays, for post-mortem).
wait_ready() {
  local name="$1" port="$2" pid="$3" started="$4" mode="${5:-fresh}" dir="$run_dir/$1" why
  while ! answers_metadata "$port"; do
    why=""
    if ! proc_alive "$pid"; then
      why="$name (Kafka on 127.0.0.1:$port) exited during start-up"
    elif ((SECONDS - started >= start_timeout)); then
      why="$name did not answer a metadata request on 127.0.0.1:$port within ${start_timeout}s"
    fi
    if [[ -n "$why" ]]; then
      show_logs "$dir"
      if [[ "$mode" == fresh ]]; then stop_cluster "$name"; else stop_broker "$name"; fi
      die "$why"
    fi
    sleep 0.25
  done
}

# Stops the broker (TERM, bounded, then KILL) and starts it again on its data: same port,
# Kafka version and authorizer setting as recorded by `start`, whatever the environment says.
# Also starts a broker that died on its own, as long as its data is there.
restart_cluster() {
  local name="$1" dir="$run_dir/$1" port version libs
  [[ -f "$dir/data/meta.properties" ]] ||
    die "$name has no formatted data in $dir/data (never started, or stopped): use start"
  port="$(cat "$dir/port")"
  version="$(cat "$dir/version")"
  authorizer="$(cat "$dir/authorizer" 2>/dev/null || echo 0)"
  secure="$(cat "$dir/secure" 2>/dev/null || echo 0)"
  command -v java >/dev/null || die "java is required"
  command -v kcat >/dev/null || die "kcat is required (scripts/setup installs it)"
  stop_broker "$name"
  ports_free "$name" "$port"
  libs="$("$here/fetch.sh" "$version")"
  launch "$name" "$port" "$version" "$libs" restart
}

stop_all() {
  local dir
  [[ -d "$run_dir" ]] || return 0
  for dir in "$run_dir"/*/; do
    dir="${dir%/}"
    if [[ -f "$dir/pid" ]] || is_multi "$dir"; then stop_cluster "$(basename "$dir")"; fi
  done
  return 0
}

status() {
  local dir pid
  [[ -d "$run_dir" ]] || return 0
  for dir in "$run_dir"/*/; do
    dir="${dir%/}"
    [[ -f "$dir/port" ]] || continue
    if is_multi "$dir"; then
      multi_status "$dir"
    elif pid="$(running_pid "$dir")"; then
      echo "$(basename "$dir") running pid=$pid kafka=$(cat "$dir/version") bootstrap=127.0.0.1:$(cat "$dir/port")" \
        "authorizer=$(cat "$dir/authorizer" 2>/dev/null || echo 0) secure=$(cat "$dir/secure" 2>/dev/null || echo 0)"
    else
      echo "$(basename "$dir") stopped kafka=$(cat "$dir/version" 2>/dev/null) port=$(cat "$dir/port")"
    fi
  done
}

# ---- Multi-broker clusters (KFERRY_KAFKA_BROKERS=N; see the header) ----

# A cluster dir in the multi-broker layout records its node count in `brokers`.
is_multi() { [[ -f "$1/brokers" ]]; }

# The node dirs of a multi-broker cluster dir, one a line, node 1 first.
node_dirs() {
  local i
  for ((i = 1; i <= $(cat "$1/brokers"); i++)); do echo "$1/node-$i"; done
}

# Node I's ports, from the cluster's base PORT: clients, controller, inter-broker.
node_port() { echo $(($1 + 10 * ($2 - 1))); }
node_cport() { echo $(($1 + 10 * ($2 - 1) + 1)); }
node_iport() { echo $(($1 + 10 * ($2 - 1) + 5)); }
# The client port node I advertises: its own, or the proxy's in front of it.
node_adv_port() {
  if [[ -n "$proxy_base" ]]; then echo $((proxy_base + $2 - 1)); else node_port "$1" "$2"; fi
}

# Replication factor and min.insync.replicas of every default and internal topic.
multi_rf() { echo $((brokers < 3 ? brokers : 3)); }
multi_isr() { echo $((brokers < 3 ? 1 : 2)); }

# Reads the settings `start` recorded, so that restart, start-node etc. use them whatever the
# environment says now.
load_multi_settings() {
  local dir="$1"
  is_multi "$dir" || die "$(basename "$dir") is not a multi-broker cluster under $run_dir (start it with KFERRY_KAFKA_BROKERS=N)"
  port="$(cat "$dir/port")"
  version="$(cat "$dir/version")"
  brokers="$(cat "$dir/brokers")"
  authorizer="$(cat "$dir/authorizer")"
  proxy_base="$(cat "$dir/proxy_port_base")"
  unclean="$(cat "$dir/unclean")"
  secure=0
}

write_node_properties() {
  local dir="$1" i="$2" ndir="$1/node-$2" voters="" j rf isr
  rf="$(multi_rf)"
  isr="$(multi_isr)"
  for ((j = 1; j <= brokers; j++)); do
    voters="$voters${voters:+,}$j@127.0.0.1:$(node_cport "$port" "$j")"
  done
  cat >"$ndir/server.properties" <<EOP
# Written by scripts/kafka/cluster.sh: node $i of $brokers combined broker+controller nodes,
# static quorum. PLAINTEXT: clients (advertised $(node_adv_port "$port" "$i")), INTERNAL: between nodes.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(node_port "$port" "$i"),CONTROLLER://127.0.0.1:$(node_cport "$port" "$i"),INTERNAL://127.0.0.1:$(node_iport "$port" "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_adv_port "$port" "$i"),INTERNAL://127.0.0.1:$(node_iport "$port" "$i")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
log.dirs=$ndir/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=12
group.initial.rebalance.delay.ms=0
# A killed node is fenced (and its partitions led elsewhere) 6 s after its last heartbeat
# (measured: 5 to 11 s after the kill, on a loaded 2-core machine), not 9.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
unclean.leader.election.enable=$([[ "$unclean" == 1 ]] && echo true || echo false)
EOP
  if [[ "${version%%.*}" -ge 4 ]]; then
    cat >>"$ndir/server.properties" <<EOP
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
EOP
  fi
  # As for a single node: every listener is PLAINTEXT, so clients and the nodes themselves
  # (INTERNAL, CONTROLLER) are all User:ANONYMOUS, a super user.
  if [[ "$authorizer" == 1 ]]; then
    cat >>"$ndir/server.properties" <<EOP
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
EOP
  fi
}

# JVM flags of one node (small heap: up to 6 nodes share a developer machine). Sets `jvm`.
node_jvm_flags() {
  local log_flag="$1"
  jvm=(-Xms128m -Xmx384m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "$log_flag")
  if [[ -n "${KFERRY_KAFKA_JAVA_OPTS:-}" ]]; then
    local -a extra
    read -r -a extra <<<"$KFERRY_KAFKA_JAVA_OPTS"
    jvm+=("${extra[@]}")
  fi
}

# Starts node I's JVM (config rewritten from the recorded settings; no waiting).
spawn_node() {
  local dir="$1" i="$2" libs="$3" ndir="$1/node-$2" log_flag
  local -a jvm
  write_node_properties "$dir" "$i"
  log_flag="$(write_log_config "$ndir" "$libs")"
  node_jvm_flags "$log_flag"
  setsid java "${jvm[@]}" "-Dkferry.cluster=$ndir" -cp "$libs/*" kafka.Kafka \
    "$ndir/server.properties" >>"$ndir/stdout.log" 2>&1 </dev/null &
  echo "$!" >"$ndir/pid"
}

# Formats node I's storage with the cluster's id (all nodes in parallel, see start_multi).
format_node() {
  local dir="$1" i="$2" libs="$3" cluster_id="$4" ndir="$1/node-$2"
  local -a jvm
  node_jvm_flags "-Dlog4j2.configurationFile=$ndir/log4j2.properties"
  java "${jvm[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$ndir/server.properties" >"$ndir/format.log" 2>&1
}

# The node answers a metadata request on its own port that lists every broker of EXPECT
# (node ids) at its advertised address: it registered and was unfenced, as were they.
node_lists() {
  local i="$1" out j
  shift
  port_busy "$(node_port "$port" "$i")" || return 1
  out="$(timeout 10 kcat -b "127.0.0.1:$(node_port "$port" "$i")" -L -m 3 2>/dev/null)" || return 1
  for j in "$@"; do
    grep -q "broker $j at 127.0.0.1:$(node_adv_port "$port" "$j")\b" <<<"$out" || return 1
  done
}

# Bounded wait until each node of NODES lists every node of EXPECT; on a timeout or a death,
# shows the logs and stops (MODE fresh: also removes the data of) the nodes just started.
wait_nodes_ready() {
  local name="$1" mode="$2" nodes="$3" expect="$4" started="$5" dir="$run_dir/$1" i why pid
  local -a ready=()
  while :; do
    why=""
    ready=()
    for i in $nodes; do
      if node_lists "$i" $expect; then ready+=("$i"); continue; fi
      pid="$(cat "$dir/node-$i/pid" 2>/dev/null || true)"
      if [[ -z "$pid" ]] || ! proc_alive "$pid"; then
        why="$name node $i (Kafka on 127.0.0.1:$(node_port "$port" "$i")) exited during start-up"
      fi
    done
    ((${#ready[@]} == $(wc -w <<<"$nodes"))) && return 0
    if [[ -z "$why" ]] && ((SECONDS - started >= start_timeout)); then
      why="$name: node(s) $nodes did not all list broker(s) $expect within ${start_timeout}s (ready: ${ready[*]:-none})"
    fi
    if [[ -n "$why" ]]; then
      for i in $nodes; do show_logs "$dir/node-$i"; done
      if [[ "$mode" == fresh ]]; then
        stop_cluster "$name"
      else
        local -a ndirs=()
        for i in $nodes; do ndirs+=("$dir/node-$i"); done
        stop_jvms TERM "${ndirs[@]}"
      fi
      die "$why"
    fi
    sleep 0.5
  done
}

# Every client address, comma-separated (what `start` prints).
multi_bootstrap() {
  local i out=""
  for ((i = 1; i <= brokers; i++)); do out="$out${out:+,}127.0.0.1:$(node_port "$port" "$i")"; done
  echo "$out"
}

# Fail fast on a port in use: each node's three listeners.
multi_ports_free() {
  local name="$1" i p
  shift
  for i in "$@"; do
    for p in "$(node_port "$port" "$i")" "$(node_cport "$port" "$i")" "$(node_iport "$port" "$i")"; do
      port_busy "$p" && die "port 127.0.0.1:$p (node $i) is already in use; cannot start $name"
    done
  done
  return 0
}

all_nodes() { seq 1 "$brokers" | tr '\n' ' '; }

start_multi() {
  local name="$1" dir="$run_dir/$1" libs i cluster_id started
  [[ "$brokers" =~ ^[1-9]$ ]] || die "KFERRY_KAFKA_BROKERS must be 1 to 9, not: $brokers"
  [[ "$unclean" == [01] ]] || die "KFERRY_KAFKA_UNCLEAN_LEADER_ELECTION must be 0 or 1, not: $unclean"
  [[ "$secure" == 0 ]] || die "KFERRY_KAFKA_SECURE=1 is supported on single-node clusters only"
  if [[ -n "$proxy_base" ]]; then
    if ! [[ "$proxy_base" =~ ^[1-9][0-9]{0,4}$ ]] || ((proxy_base + brokers > 65535)); then
      die "bad KFERRY_KAFKA_PROXY_PORT_BASE: $proxy_base"
    fi
  fi
  if (($(node_iport "$port" "$brokers") >= 65535)); then die "ports from $port do not fit $brokers nodes"; fi
  if running_pid "$dir" >/dev/null; then
    die "$name already runs as a single-node cluster (pid $(cat "$dir/pid")); stop it first"
  fi
  if is_multi "$dir"; then
    local up=0 n=0 nd
    while read -r nd; do
      n=$((n + 1))
      running_pid "$nd" >/dev/null && up=$((up + 1))
    done < <(node_dirs "$dir")
    if ((up > 0)); then
      if ((up == n)) && [[ "$(cat "$dir/port")" == "$port" && "$(cat "$dir/version")" == "$version" &&
        "$(cat "$dir/brokers")" == "$brokers" && "$(cat "$dir/authorizer")" == "$authorizer" &&
        "$(cat "$dir/proxy_port_base")" == "$proxy_base" && "$(cat "$dir/unclean")" == "$unclean" ]]; then
        wait_nodes_ready "$name" restart "$(all_nodes)" "$(all_nodes)" "$SECONDS"
        log "$name already running (Kafka $version, $brokers nodes)"
        multi_bootstrap
        return 0
      fi
      die "$name already runs ($up of $n nodes up) with other settings or not all nodes up; stop it first"
    fi
  fi

  multi_ports_free "$name" $(all_nodes)
  libs="$("$here/fetch.sh" "$version")"
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$port" >"$dir/port"
  echo "$version" >"$dir/version"
  echo "$brokers" >"$dir/brokers"
  echo "$authorizer" >"$dir/authorizer"
  echo 0 >"$dir/secure"
  echo "$proxy_base" >"$dir/proxy_port_base"
  echo "$unclean" >"$dir/unclean"
  cluster_id="$(random_cluster_id)"
  local -a fpids=()
  for ((i = 1; i <= brokers; i++)); do
    mkdir -p "$dir/node-$i/data"
    write_node_properties "$dir" "$i"
    write_log_config "$dir/node-$i" "$libs" >/dev/null
    format_node "$dir" "$i" "$libs" "$cluster_id" &
    fpids+=("$!")
  done
  for i in "${!fpids[@]}"; do
    if ! wait "${fpids[$i]}"; then
      tail -n 40 "$dir/node-$((i + 1))/format.log" >&2
      rm -rf "$dir"/node-*/data
      die "formatting the storage of $name node $((i + 1)) failed"
    fi
  done

  # A quorum of N needs a majority up to elect a leader: start every node, then wait.
  started="$SECONDS"
  for ((i = 1; i <= brokers; i++)); do spawn_node "$dir" "$i" "$libs"; done
  wait_nodes_ready "$name" fresh "$(all_nodes)" "$(all_nodes)" "$started"
  local with=""
  [[ "$authorizer" == 1 ]] && with=", StandardAuthorizer"
  [[ -n "$proxy_base" ]] && with="$with, advertising proxy ports from $proxy_base"
  [[ "$unclean" == 1 ]] && with="$with, unclean leader election"
  log "started $name (Kafka $version, $brokers nodes$with) on $(multi_bootstrap)" \
    "in $((SECONDS - started))s; logs in $dir/node-*"
  multi_bootstrap
}

# All nodes stopped (TERM at once, bounded) and started again on their data.
restart_multi() {
  local name="$1" dir="$run_dir/$1" libs i nd started
  load_multi_settings "$dir"
  while read -r nd; do
    [[ -f "$nd/data/meta.properties" ]] ||
      die "$name has no formatted data in $nd/data (never started, or stopped): use start"
  done < <(node_dirs "$dir")
  command -v java >/dev/null || die "java is required"
  command -v kcat >/dev/null || die "kcat is required (scripts/setup installs it)"
  stop_broker "$name"
  multi_ports_free "$name" $(all_nodes)
  libs="$("$here/fetch.sh" "$version")"
  started="$SECONDS"
  for ((i = 1; i <= brokers; i++)); do spawn_node "$dir" "$i" "$libs"; done
  wait_nodes_ready "$name" restart "$(all_nodes)" "$(all_nodes)" "$started"
  log "restarted $name (Kafka $version, $brokers nodes) in $((SECONDS - started))s"
  multi_bootstrap
}

# Checks NAME and N of the *-node commands; loads the cluster's settings.
node_args() {
  local name="$1" i="$2"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $name"
  load_multi_settings "$run_dir/$name"
  [[ "$i" =~ ^[1-9]$ ]] && ((i <= brokers)) || die "$name has nodes 1 to $brokers, not: $i"
}

stop_node() {
  local name="$1" i="$2" sig="$3"
  node_args "$name" "$i"
  if ! running_pid "$run_dir/$name/node-$i" >/dev/null; then
    log "$name node $i is not running"
    rm -f "$run_dir/$name/node-$i/pid"
    return 0
  fi
  stop_jvms "$sig" "$run_dir/$name/node-$i"
}

# Starts node N on its data and waits until it answers metadata listing itself. A node
# already running is a no-op success (after the same wait).
start_node() {
  local name="$1" i="$2" dir="$run_dir/$1" libs started pid
  node_args "$name" "$i"
  [[ -f "$dir/node-$i/data/meta.properties" ]] ||
    die "$name node $i has no formatted data in $dir/node-$i/data (cluster stopped?): use start"
  started="$SECONDS"
  if pid="$(running_pid "$dir/node-$i")"; then
    wait_nodes_ready "$name" restart "$i" "$i" "$started"
    log "$name node $i already running (pid $pid)"
    echo "127.0.0.1:$(node_port "$port" "$i")"
    return 0
  fi
  command -v java >/dev/null || die "java is required"
  command -v kcat >/dev/null || die "kcat is required (scripts/setup installs it)"
  multi_ports_free "$name" "$i"
  libs="$("$here/fetch.sh" "$version")"
  spawn_node "$dir" "$i" "$libs"
  wait_nodes_ready "$name" restart "$i" "$i" "$started"
  log "started $name node $i (pid $(cat "$dir/node-$i/pid")) on 127.0.0.1:$(node_port "$port" "$i") in $((SECONDS - started))s"
  echo "127.0.0.1:$(node_port "$port" "$i")"
}

multi_status() {
  local dir="$1" i up="" down="" pid
  (
    load_multi_settings "$dir"
    for ((i = 1; i <= brokers; i++)); do
      if pid="$(running_pid "$dir/node-$i")"; then up="$up${up:+,}$i:$pid"; else down="$down${down:+,}$i"; fi
    done
    local state=stopped
    [[ -n "$up" ]] && state=running
    echo "$(basename "$dir") $state kafka=$version brokers=$brokers up=${up:-none} down=${down:-none}" \
      "bootstrap=$(multi_bootstrap) authorizer=$authorizer proxy_port_base=${proxy_base:-none} unclean=$unclean"
  )
}

case "${1:-}" in
  start)
    (($# >= 3 && $# <= 4)) || usage
    if [[ "$brokers" != 1 || -n "$proxy_base" ]]; then
      start_cluster_checks "$2" "$3" "${4:-4.4.0}"
      port="$3"
      version="${4:-4.4.0}"
      start_multi "$2"
    else
      start_cluster "$2" "$3" "${4:-4.4.0}"
    fi
    ;;
  stop)
    (($# == 2)) || usage
    [[ "$2" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $2"
    stop_cluster "$2"
    ;;
  restart)
    (($# == 2)) || usage
    [[ "$2" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $2"
    if is_multi "$run_dir/$2"; then restart_multi "$2"; else restart_cluster "$2"; fi
    ;;
  stop-node | kill-node)
    (($# == 3)) || usage
    sig=TERM
    [[ "$1" == kill-node ]] && sig=KILL
    stop_node "$2" "$3" "$sig"
    ;;
  start-node)
    (($# == 3)) || usage
    start_node "$2" "$3"
    ;;
  stop-all)
    (($# == 1)) || usage
    stop_all
    ;;
  status)
    status
    ;;
  *) usage ;;
esac

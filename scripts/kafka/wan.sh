#!/usr/bin/env bash
# A simulated WAN in front of a test cluster's brokers: one Toxiproxy server (scripts/setup
# installs it) with one TCP proxy per broker, and latency added per direction.
#
#   scripts/kafka/wan.sh start NAME API_PORT CLUSTER     a proxy per node of CLUSTER, a multi-
#       broker cluster from cluster.sh started with KFERRY_KAFKA_PROXY_PORT_BASE=P: proxy i
#       listens on 127.0.0.1:(P+i-1), the port node i advertises, and forwards to node i's
#       own client port (the Toxiproxy API on 127.0.0.1:API_PORT)
#   scripts/kafka/wan.sh start NAME API_PORT LISTEN:UPSTREAM...   explicit proxies instead:
#       proxy i listens on 127.0.0.1:LISTEN and forwards to 127.0.0.1:UPSTREAM
#   scripts/kafka/wan.sh latency NAME MS [DOWN_MS]   on every proxy: MS added to each chunk
#       going to the broker (upstream) and DOWN_MS (default MS) to each coming back, so a
#       request/response round trip takes MS+DOWN_MS longer; 0 removes that direction's toxic
#   scripts/kafka/wan.sh cut NAME I          proxy I disabled: connections reset, new ones refused
#   scripts/kafka/wan.sh blackhole NAME I    proxy I stops passing data both ways (connections
#       stay open, as in a network partition; Toxiproxy's timeout toxic with timeout 0)
#   scripts/kafka/wan.sh restore NAME I      proxy I enabled again and its blackhole removed
#   scripts/kafka/wan.sh clear NAME          every toxic removed and every proxy enabled
#   scripts/kafka/wan.sh stop NAME           the server stopped (TERM, then KILL), state removed
#   scripts/kafka/wan.sh status              one line per WAN
#
# `start` prints the proxies' addresses, comma-separated (the bootstrap list through the WAN);
# starting a NAME that already runs with the same arguments is a no-op success. State lives in
# ${KFERRY_RUN_DIR:-/tmp/kferry-kafka}/toxiproxy/NAME (pid, proxies, server.log). Proxies are
# named NAME-1, NAME-2, ... in Toxiproxy, for direct use of its API or toxiproxy-cli.
# Environment: KFERRY_CACHE (see scripts/setup), KFERRY_TOXIPROXY_BIN (dir with
# toxiproxy-server; default the one scripts/setup installs), KFERRY_RUN_DIR.
set -euo pipefail

run_dir="$(realpath -m "${KFERRY_RUN_DIR:-/tmp/kferry-kafka}")"
wan_dir="$run_dir/toxiproxy"
toxiproxy_version=v2.5.0 # keep in step with scripts/setup
bin_dir="${KFERRY_TOXIPROXY_BIN:-${KFERRY_CACHE:-$HOME/.cache/kferry}/toxiproxy-$toxiproxy_version/bin}"

log() { printf 'wan.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '5,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_name() { [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad WAN name: $1"; }
check_port() {
  if ! [[ "$1" =~ ^[1-9][0-9]{0,4}$ ]] || (($1 >= 65535)); then die "bad port: $1"; fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The server runs as `toxiproxy-server -host=127.0.0.1 -port=API`: a pid is ours only while
# its command line says so (pid reuse; a zombie's command line is empty).
is_ours() {
  local pid="$1" api="$2"
  grep -qzxF -- "-port=$api" "/proc/$pid/cmdline" 2>/dev/null &&
    grep -qzF -- "toxiproxy-server" "/proc/$pid/cmdline" 2>/dev/null
}

running_pid() {
  local dir="$wan_dir/$1" pid
  [[ -f "$dir/pid" && -f "$dir/api_port" ]] || return 1
  pid="$(cat "$dir/pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" "$(cat "$dir/api_port")" && echo "$pid"
}

api_port_of() {
  running_pid "$1" >/dev/null || die "WAN $1 is not running (wan.sh start $1 ...)"
  cat "$wan_dir/$1/api_port"
}

# One call of Toxiproxy's HTTP API; fails (with its answer) unless the status is EXPECTED.
call_api() {
  local api="$1" method="$2" path="$3" body="$4" expected="$5" out code
  out="$(curl -sS -m 10 -X "$method" -H 'Content-Type: application/json' ${body:+-d "$body"} \
    -w '\n%{http_code}' "http://127.0.0.1:$api$path")" || die "Toxiproxy API on 127.0.0.1:$api: $method $path failed"
  code="${out##*$'\n'}"
  [[ " $expected " == *" $code "* ]] || die "Toxiproxy API: $method $path answered $code: ${out%$'\n'*}"
}

# Stops the server of NAME (TERM, bounded, then KILL) and removes its state dir.
stop_wan() {
  local name="$1" dir="$wan_dir/$1" pid api waited=0
  if pid="$(running_pid "$name")"; then
    api="$(cat "$dir/api_port")"
    kill -TERM "$pid" 2>/dev/null || true
    while is_ours "$pid" "$api" && ((waited < 100)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if is_ours "$pid" "$api"; then
      kill -KILL "$pid" 2>/dev/null || true
      while is_ours "$pid" "$api"; do sleep 0.1; done
    fi
    log "stopped WAN $name (toxiproxy-server pid $pid)"
  fi
  rm -rf "${dir:?}"
}

# Proxy pairs "LISTEN:UPSTREAM" of a multi-broker cluster started with a proxy port base.
cluster_pairs() {
  local cluster="$1" cdir="$run_dir/$1" base proxy n i
  [[ -f "$cdir/brokers" ]] || die "$cluster is not a multi-broker cluster under $run_dir (cluster.sh with KFERRY_KAFKA_BROKERS)"
  proxy="$(cat "$cdir/proxy_port_base")"
  [[ -n "$proxy" ]] || die "$cluster was started without KFERRY_KAFKA_PROXY_PORT_BASE: its brokers advertise their own ports"
  base="$(cat "$cdir/port")"
  n="$(cat "$cdir/brokers")"
  for ((i = 1; i <= n; i++)); do echo "$((proxy + i - 1)):$((base + 10 * (i - 1)))"; done
}

start_wan() {
  local name="$1" api="$2" dir="$wan_dir/$1" pid pair listen upstream i waited=0 spec
  shift 2
  check_name "$name"
  check_port "$api"
  local -a pairs=()
  if (($# == 1)) && ! [[ "$1" == *:* ]]; then
    mapfile -t pairs < <(cluster_pairs "$1")
  else
    pairs=("$@")
  fi
  ((${#pairs[@]} > 0)) || usage
  for pair in "${pairs[@]}"; do
    [[ "$pair" =~ ^[0-9]+:[0-9]+$ ]] || die "bad proxy LISTEN:UPSTREAM: $pair"
    check_port "${pair%%:*}"
    check_port "${pair##*:}"
  done
  spec="$api ${pairs[*]}"

  if pid="$(running_pid "$name")"; then
    [[ "$(cat "$dir/spec")" == "$spec" ]] ||
      die "WAN $name already runs (pid $pid) as: $(cat "$dir/spec"); stop it first"
    log "WAN $name already running (pid $pid)"
    cat "$dir/addresses"
    return 0
  fi
  [[ -x "$bin_dir/toxiproxy-server" ]] || die "no $bin_dir/toxiproxy-server: run scripts/setup (needs Go)"
  command -v curl >/dev/null || die "curl is required"
  for p in "$api" "${pairs[@]%%:*}"; do
    port_busy "$p" && die "port 127.0.0.1:$p is already in use; cannot start WAN $name"
  done

  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$api" >"$dir/api_port"
  # A start that fails half-way leaves nothing running.
  starting="$name"
  trap 'rc=$?; if ((rc != 0)); then stop_wan "$starting"; fi' EXIT
  LOG_LEVEL=warn setsid "$bin_dir/toxiproxy-server" -host=127.0.0.1 "-port=$api" \
    >>"$dir/server.log" 2>&1 </dev/null &
  echo "$!" >"$dir/pid"
  until curl -sf -m 2 "http://127.0.0.1:$api/version" >/dev/null; do
    proc_alive "$(cat "$dir/pid")" || { tail -n 20 "$dir/server.log" >&2; die "toxiproxy-server exited during start-up"; }
    ((waited < 100)) || die "toxiproxy-server did not answer on 127.0.0.1:$api within 10s"
    sleep 0.1
    waited=$((waited + 1))
  done
  local addresses=""
  i=0
  for pair in "${pairs[@]}"; do
    i=$((i + 1))
    listen="${pair%%:*}"
    upstream="${pair##*:}"
    call_api "$api" POST /proxies \
      "{\"name\":\"$name-$i\",\"listen\":\"127.0.0.1:$listen\",\"upstream\":\"127.0.0.1:$upstream\",\"enabled\":true}" 201
    echo "$i $listen $upstream" >>"$dir/proxies"
    addresses="$addresses${addresses:+,}127.0.0.1:$listen"
  done
  echo "$addresses" >"$dir/addresses"
  echo "$spec" >"$dir/spec"
  trap - EXIT
  log "started WAN $name (toxiproxy-server pid $(cat "$dir/pid"), API 127.0.0.1:$api): ${pairs[*]}"
  echo "$addresses"
}

proc_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# Proxy indexes of NAME, one a line.
proxy_indexes() { cut -d' ' -f1 "$wan_dir/$1/proxies"; }

check_index() {
  local name="$1" i="$2"
  [[ "$i" =~ ^[0-9]+$ ]] && proxy_indexes "$name" | grep -qx "$i" ||
    die "WAN $name has proxies $(proxy_indexes "$name" | tr '\n' ' ')not: $i"
}

# Sets (MS > 0) or removes (MS 0) the latency toxic of one direction on one proxy.
set_latency() {
  local api="$1" proxy="$2" stream="$3" ms="$4"
  call_api "$api" DELETE "/proxies/$proxy/toxics/latency_$stream" "" "204 404"
  if ((ms > 0)); then
    call_api "$api" POST "/proxies/$proxy/toxics" \
      "{\"name\":\"latency_$stream\",\"type\":\"latency\",\"stream\":\"$stream\",\"toxicity\":1,\"attributes\":{\"latency\":$ms,\"jitter\":0}}" 200
  fi
}

latency() {
  local name="$1" up="$2" down="${3:-$2}" api i
  check_name "$name"
  [[ "$up" =~ ^[0-9]+$ && "$down" =~ ^[0-9]+$ ]] || die "latency must be whole milliseconds: $up $down"
  api="$(api_port_of "$name")"
  for i in $(proxy_indexes "$name"); do
    set_latency "$api" "$name-$i" upstream "$up"
    set_latency "$api" "$name-$i" downstream "$down"
  done
  log "WAN $name: +${up} ms to the brokers, +${down} ms back, on every proxy"
}

set_enabled() {
  local api="$1" proxy="$2" enabled="$3"
  call_api "$api" POST "/proxies/$proxy" "{\"enabled\":$enabled}" 200
}

# The API port of WAN NAME after checking that it runs and has a proxy I.
checked_api() {
  check_name "$1"
  check_index "$1" "$2"
  api_port_of "$1"
}

cut_proxy() {
  local name="$1" i="$2" api
  api="$(checked_api "$name" "$i")"
  set_enabled "$api" "$name-$i" false
  log "WAN $name: proxy $i cut (connections reset, new ones refused)"
}

blackhole() {
  local name="$1" i="$2" api stream
  api="$(checked_api "$name" "$i")"
  for stream in upstream downstream; do
    call_api "$api" DELETE "/proxies/$name-$i/toxics/blackhole_$stream" "" "204 404"
    call_api "$api" POST "/proxies/$name-$i/toxics" \
      "{\"name\":\"blackhole_$stream\",\"type\":\"timeout\",\"stream\":\"$stream\",\"toxicity\":1,\"attributes\":{\"timeout\":0}}" 200
  done
  log "WAN $name: proxy $i blackholed (no data either way; connections stay open)"
}

restore() {
  local name="$1" i="$2" api stream
  api="$(checked_api "$name" "$i")"
  for stream in upstream downstream; do
    call_api "$api" DELETE "/proxies/$name-$i/toxics/blackhole_$stream" "" "204 404"
  done
  set_enabled "$api" "$name-$i" true
  log "WAN $name: proxy $i restored"
}

clear_wan() {
  local name="$1" api i t
  check_name "$name"
  api="$(api_port_of "$name")"
  for i in $(proxy_indexes "$name"); do
    for t in latency_upstream latency_downstream blackhole_upstream blackhole_downstream; do
      call_api "$api" DELETE "/proxies/$name-$i/toxics/$t" "" "204 404"
    done
    set_enabled "$api" "$name-$i" true
  done
  log "WAN $name: cleared (no toxics, every proxy enabled)"
}

status() {
  local dir name pid
  [[ -d "$wan_dir" ]] || return 0
  for dir in "$wan_dir"/*/; do
    dir="${dir%/}"
    name="$(basename "$dir")"
    [[ -f "$dir/api_port" ]] || continue
    if pid="$(running_pid "$name")"; then
      echo "$name running pid=$pid api=127.0.0.1:$(cat "$dir/api_port") proxies=$(cat "$dir/addresses" 2>/dev/null)"
    else
      echo "$name stopped api=127.0.0.1:$(cat "$dir/api_port")"
    fi
  done
}

case "${1:-}" in
  start)
    (($# >= 4)) || usage
    shift
    start_wan "$@"
    ;;
  latency)
    (($# == 3 || $# == 4)) || usage
    latency "$2" "$3" "${4:-$3}"
    ;;
  cut)
    (($# == 3)) || usage
    cut_proxy "$2" "$3"
    ;;
  blackhole)
    (($# == 3)) || usage
    blackhole "$2" "$3"
    ;;
  restore)
    (($# == 3)) || usage
    restore "$2" "$3"
    ;;
  clear)
    (($# == 2)) || usage
    clear_wan "$2"
    ;;
  stop)
    (($# == 2)) || usage
    check_name "$2"
    stop_wan "$2"
    ;;
  status)
    status
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for integration tests and CI.
# The broker classpath comes from Maven Central (scripts/kafka/pom.xml); no Docker, no Kafka tarball.
#
# Usage: bash scripts/kafka/kafka.sh start|stop|restart|status
#   start    fetch jars into .cache/kafka-libs (first time only, needs mvn), wipe + format the data dir,
#            start the broker in the background and wait until it serves metadata requests.
#            Idempotent: exits 0 at once if a healthy broker from this checkout is already running.
#   stop     SIGTERM, wait up to 30 s, then SIGKILL. Exits 0 if nothing is running.
#   restart  stop + start.
#   status   prints "running ..." (exit 0) or "not running" (exit 3).
#
# Env (all optional):
#   KAFKA_PORT=19092             PLAINTEXT listener on 127.0.0.1 (clients: 127.0.0.1:$KAFKA_PORT)
#   KAFKA_CONTROLLER_PORT        KRaft controller listener (default KAFKA_PORT+1, i.e. 19093)
#   RUNTRAIL_KAFKA_DATA          data dir (default .cache/kafka-data); wiped on every start (only if it is
#                                empty or was created by this script), unless KAFKA_KEEP_DATA=1
#   KAFKA_KEEP_DATA=1            keep an already formatted data dir (same ports only)
#   KAFKA_HEAP_OPTS              default "-Xms512m -Xmx512m"
#   KAFKA_READY_TIMEOUT=90       seconds to wait for readiness
#   KAFKA_MVN_ARGS               extra mvn args for the jar download (e.g. -Dmaven.repo.local=/ci/m2)
#
# Files (all under <project>/.cache/, gitignored): kafka-libs/ (jar cache), kafka-data/, kafka.pid,
# kafka.port, kafka.log (broker console log, truncated on start), kafka-server.properties (rendered config),
# kafka-mvn.log (output of the last jar download), kafka.lock.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE="$ROOT/.cache"
LIBS="$CACHE/kafka-libs"
PIDFILE="$CACHE/kafka.pid"
PORTFILE="$CACHE/kafka.port"
LOGFILE="$CACHE/kafka.log"
RUNCONF="$CACHE/kafka-server.properties"
LOCKFILE="$CACHE/kafka.lock"
DATA="${RUNTRAIL_KAFKA_DATA:-$CACHE/kafka-data}"
case "$DATA" in /*) ;; *) DATA="$PWD/$DATA" ;; esac
DATA_MARKER=".runtrail-kafka-data"
PORT="${KAFKA_PORT:-19092}"
case "$PORT" in '' | *[!0-9]*) echo "kafka: ERROR: KAFKA_PORT must be numeric" >&2 && exit 1 ;; esac
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT=30

log() { echo "kafka: $*"; }
die() {
  echo "kafka: ERROR: $*" >&2
  exit 1
}
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t="${EPOCHREALTIME/[.,]/}"
    echo $((t / 1000))
  else
    echo $((SECONDS * 1000))
  fi
}
secs_since() { # $1 = start ms
  local d=$(($(now_ms) - $1))
  printf '%d.%01ds' $((d / 1000)) $(((d % 1000) / 100))
}

case "$CPORT" in '' | *[!0-9]*) die "KAFKA_CONTROLLER_PORT must be numeric" ;; esac
[ "$PORT" != "$CPORT" ] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

# ---------------------------------------------------------------- process helpers
alive() { # pid exists and is not a zombie
  local st
  st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [ -n "$st" ] && [[ "$st" != Z* ]]
}
is_our_broker() { # pid is a kafka.Kafka JVM started with this checkout's rendered config
  local args
  args="$(ps -o args= -p "$1" 2>/dev/null)" || return 1
  [[ "$args" == *"kafka.Kafka $RUNCONF"* ]]
}
pidfile_pid() { # live broker pid from the pid file, or nothing
  local pid
  [ -f "$PIDFILE" ] || return 0
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  if [ -n "$pid" ] && alive "$pid" && is_our_broker "$pid"; then echo "$pid"; fi
}
all_broker_pids() { # pid-file pid + any stray JVM running this checkout's config (e.g. pid file lost)
  {
    pidfile_pid
    ps -eo pid=,args= 2>/dev/null | awk -v pat="kafka.Kafka $RUNCONF" \
      '$2 ~ /(^|\/)java$/ && index($0, pat) { print $1 }'
  } | sort -un
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running_port() { if [ -f "$PORTFILE" ]; then tr -dc '0-9' <"$PORTFILE"; fi; }
kafka_version() {
  local j
  j="$(ls "$LIBS"/kafka_2.13-*.jar 2>/dev/null | head -1 || true)"
  j="${j##*/kafka_2.13-}"
  echo "${j%.jar}"
}

wait_ready() { # $1 = pid, $2 = timeout seconds, rest = extra args
  local pid="$1" timeout="$2" port
  shift 2
  command -v node >/dev/null || die "node not found (needed for the readiness check)"
  port="$(running_port)"
  KAFKA_BROKERS="127.0.0.1:${port:-$PORT}" \
    node "$SCRIPT_DIR/wait-ready.mjs" --pid "$pid" --log "$LOGFILE" --timeout "$timeout" "$@"
}

lock() { # serialize concurrent start/stop from this checkout (best effort: flock is Linux-only)
  mkdir -p "$CACHE"
  if command -v flock >/dev/null; then
    exec 9>"$LOCKFILE"
    flock -w 300 9 || die "could not lock $LOCKFILE within 300 s"
  fi
}

# ---------------------------------------------------------------- jars
pom_stamp() { cksum <"$SCRIPT_DIR/pom.xml" | awk '{ print $1 "-" $2 }'; }

ensure_libs() {
  local want
  want="$(pom_stamp)"
  if [ -f "$LIBS/.pom-stamp" ] && [ "$(cat "$LIBS/.pom-stamp")" = "$want" ] &&
    ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found; Maven is needed once to fetch the broker jars into $LIBS"
  local tmp="$CACHE/kafka-libs.tmp.$$" t0
  t0="$(now_ms)"
  log "fetching broker jars from Maven Central (first run or pom.xml changed) -> .cache/kafka-libs ..."
  rm -rf "$tmp"
  mkdir -p "$CACHE"
  # shellcheck disable=SC2086 # KAFKA_MVN_ARGS is a word list on purpose
  if ! mvn -q -B -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" package \
    -Dkafka.libs.dir="$tmp" -Dkafka.build.dir="$CACHE/kafka-build" ${KAFKA_MVN_ARGS:-} \
    >"$CACHE/kafka-mvn.log" 2>&1 9>&-; then
    tail -30 "$CACHE/kafka-mvn.log" >&2
    rm -rf "$tmp" "$CACHE/kafka-build"
    die "mvn failed to fetch the Kafka broker jars (is Maven Central reachable? full output: .cache/kafka-mvn.log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || {
    rm -rf "$tmp"
    die "mvn succeeded but no kafka_2.13 jar in $tmp"
  }
  echo "$want" >"$tmp/.pom-stamp"
  rm -rf "$LIBS" "$CACHE/kafka-build"
  mv "$tmp" "$LIBS"
  log "jars ready: $(ls "$LIBS"/*.jar | wc -l | tr -d ' ') jars, $(du -sh "$LIBS" | cut -f1), kafka $(kafka_version) ($(secs_since "$t0"))"
}

# ---------------------------------------------------------------- config + data
render_config() {
  {
    grep -Ev '^[[:space:]]*(listeners|advertised\.listeners|controller\.quorum\.bootstrap\.servers|controller\.quorum\.voters|log\.dirs)[[:space:]]*=' \
      "$SCRIPT_DIR/server.properties"
    echo
    echo "# ---- rendered by scripts/kafka/kafka.sh"
    echo "controller.quorum.bootstrap.servers=127.0.0.1:$CPORT"
    echo "listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
    echo "log.dirs=$DATA"
  } >"$RUNCONF"
}

JAVA_LOG_OPTS=()
java_common() {
  JAVA_LOG_OPTS=(
    "-Dlog4j2.configurationFile=file:$SCRIPT_DIR/log4j2.properties"
    "-Dkafka.logs.dir=$CACHE/kafka-logs"
  )
}

new_cluster_id() { # = kafka.tools.StorageTool random-uuid (base64url of 16 random bytes, not starting
  local id          # with '-'), without paying for a JVM start
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    if [ "${#id}" -eq 22 ] && [[ "$id" != -* ]]; then break; fi
  done
  echo "$id"
}

format_storage() {
  if [ "${KAFKA_KEEP_DATA:-}" = "1" ] && [ -f "$DATA/meta.properties" ]; then
    log "keeping existing data in $DATA (KAFKA_KEEP_DATA=1)"
    return 0
  fi
  if [ -e "$DATA" ]; then
    if [ -f "$DATA/$DATA_MARKER" ] || [ -z "$(ls -A "$DATA" 2>/dev/null)" ]; then
      rm -rf "$DATA"
    else
      die "$DATA exists and was not created by kafka.sh (no $DATA_MARKER); refusing to wipe it"
    fi
  fi
  mkdir -p "$DATA"
  : >"$DATA/$DATA_MARKER"
  local cid t0
  t0="$(now_ms)"
  cid="$(new_cluster_id)"
  # Short-lived JVM: C1 only + serial GC roughly halves its run time (~0.7 s instead of ~1.3 s).
  java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${JAVA_LOG_OPTS[@]}" -cp "$LIBS/*" \
    kafka.tools.StorageTool format --standalone -t "$cid" -c "$RUNCONF" >>"$LOGFILE" 2>&1 9>&- || {
    tail -20 "$LOGFILE" >&2
    die "formatting $DATA failed"
  }
  log "formatted $DATA (cluster id $cid, $(secs_since "$t0"))"
}

# ---------------------------------------------------------------- commands
stop_pids() { # stop the given pids: SIGTERM, wait, SIGKILL
  local pids=("$@") t0 left deadline
  t0="$(now_ms)"
  log "stopping broker (pid ${pids[*]}) ..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while :; do
    left=()
    for p in "${pids[@]}"; do if alive "$p"; then left+=("$p"); fi; done
    [ "${#left[@]}" -gt 0 ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "still running after ${STOP_TIMEOUT}s, sending SIGKILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      for _ in $(seq 1 50); do
        left=()
        for p in "${pids[@]}"; do if alive "$p"; then left+=("$p"); fi; done
        [ "${#left[@]}" -gt 0 ] || break
        sleep 0.1
      done
      [ "${#left[@]}" -eq 0 ] || die "could not kill ${left[*]}"
      break
    fi
    sleep 0.2
  done
  log "stopped ($(secs_since "$t0"))"
}

cmd_stop() {
  lock
  local pids
  pids="$(all_broker_pids | tr '\n' ' ')"
  if [ -z "${pids// /}" ]; then
    log "not running"
  else
    # shellcheck disable=SC2086
    stop_pids $pids
  fi
  rm -f "$PIDFILE" "$PORTFILE"
}

cmd_status() {
  local pid port strays
  pid="$(pidfile_pid)"
  port="$(running_port)"
  if [ -n "$pid" ]; then
    if port_open "${port:-$PORT}"; then
      echo "kafka: running (pid $pid, 127.0.0.1:${port:-$PORT}, kafka $(kafka_version), log $LOGFILE)"
    else
      echo "kafka: running (pid $pid), but port ${port:-$PORT} is not accepting connections (starting or unhealthy)"
    fi
    return 0
  fi
  strays="$(all_broker_pids | tr '\n' ' ')"
  if [ -n "${strays// /}" ]; then
    echo "kafka: not running (but stray broker JVM(s) found: ${strays% }; run: kafka.sh stop)"
  else
    echo "kafka: not running"
  fi
  return 3
}

cmd_start() {
  lock
  local t0 pid strays
  t0="$(now_ms)"

  # Already running?
  pid="$(pidfile_pid)"
  if [ -n "$pid" ]; then
    local rport
    rport="$(running_port)"
    if [ -n "$rport" ] && [ "$rport" != "$PORT" ]; then
      die "broker already running on port $rport (pid $pid), not $PORT; run: kafka.sh stop"
    fi
    if wait_ready "$pid" 15 --quiet; then
      log "already running and healthy (pid $pid, 127.0.0.1:$PORT)"
      return 0
    fi
    log "broker pid $pid is running but not healthy; restarting it"
    stop_pids "$pid"
  fi
  strays="$(all_broker_pids | tr '\n' ' ')"
  if [ -n "${strays// /}" ]; then
    log "found stray broker JVM(s) from this checkout: ${strays% }"
    # shellcheck disable=SC2086
    stop_pids $strays
  fi
  rm -f "$PIDFILE" "$PORTFILE"

  # Preconditions
  command -v java >/dev/null || die "java not found (Java 17+ required)"
  local jv
  jv="$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')"
  [ "${jv%%.*}" -ge 17 ] 2>/dev/null || die "Java 17+ required, found '${jv:-unknown}'"
  for p in "$PORT" "$CPORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use by another process (not a broker started by kafka.sh)"
  done

  ensure_libs
  java_common
  mkdir -p "$CACHE"
  : >"$LOGFILE"
  render_config
  format_storage

  local heap
  read -r -a heap <<<"$HEAP_OPTS"
  # 9>&-: the broker must not inherit the lock fd (it would hold the start/stop lock forever).
  # JVM flags as in Kafka's bin/kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS), heap reduced.
  nohup java "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
    -Djava.awt.headless=true "${JAVA_LOG_OPTS[@]}" \
    -cp "$LIBS/*" kafka.Kafka "$RUNCONF" >>"$LOGFILE" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  log "started kafka $(kafka_version) (pid $pid) on 127.0.0.1:$PORT (controller $CPORT), log .cache/kafka.log; waiting for readiness ..."

  if ! wait_ready "$pid" "$READY_TIMEOUT"; then
    if alive "$pid"; then stop_pids "$pid" >&2; fi
    rm -f "$PIDFILE" "$PORTFILE"
    die "broker did not become ready (see $LOGFILE)"
  fi
  log "ready on 127.0.0.1:$PORT ($(secs_since "$t0") total)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart)
    cmd_stop
    exec 9>&- || true
    cmd_start
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Runs the agent end to end on this machine: installs what is missing, starts etcd and the tansu
# broker on loopback, puts a collect config for this host into etcd, writes lines to a demo log and
# shows them arriving in Kafka, next to host-metric points (a host_metrics entry in the same value).
# Everything it starts is stopped when it exits.
#
# LOGAGENT_DEMO_DIR (default /tmp/logagent-demo) holds the logs, data and state; it is kept after
# the run for inspection and replaced by the next run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export ETCDCTL_API=3

DEMO_DIR="${LOGAGENT_DEMO_DIR:-/tmp/logagent-demo}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TOPIC=web_log
HM_TOPIC=host_metrics
IP=127.0.0.1

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }

# --- cleanup: stop exactly what this script started -------------------------------------------
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    for f in agent.log tansu.log etcd.log; do
      if [ -s "$DEMO_DIR/$f" ]; then
        printf '\n--- last lines of %s ---\n' "$DEMO_DIR/$f" >&2
        tail -n 15 "$DEMO_DIR/$f" >&2
      fi
    done
  fi
  if [ ${#PIDS[@]} -gt 0 ]; then
    say "Stopping everything the demo started"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
      local alive=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" -eq 0 ] && break
      sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  echo "demo: files kept in $DEMO_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The first port from $1 on that nothing listens on and that is not in the rest of the arguments.
pick_port() {
  local p=$1; shift
  while port_in_use "$p" || [[ " $* " == *" $p "* ]]; do p=$((p + 1)); done
  echo "$p"
}
# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${secs}s"
    sleep 0.2
  done
}

# --- 1. tools and build ---------------------------------------------------------------------------
say "Installing missing dependencies (protoc, etcd, tansu) with scripts/install-deps.sh"
scripts/install-deps.sh

say "Building the agent and the consume example (release)"
cargo build --release --bin logagent --example consume
AGENT_BIN="$TARGET_DIR/release/logagent"
CONSUME_BIN="$TARGET_DIR/release/examples/consume"
TANSU_BIN="${TANSU_BIN:-$(command -v tansu)}"

# --- 2. a fresh demo directory ----------------------------------------------------------------------
if [ -e "$DEMO_DIR" ]; then
  [ -f "$DEMO_DIR/.logagent-demo" ] || die "$DEMO_DIR exists and was not made by this demo; set LOGAGENT_DEMO_DIR"
  rm -rf "$DEMO_DIR"
fi
mkdir -p "$DEMO_DIR"/{logs,state,etcd,tansu}
touch "$DEMO_DIR/.logagent-demo"
LOG_FILE="$DEMO_DIR/logs/access.log"

ETCD_PORT=$(pick_port 23790)
ETCD_PEER_PORT=$(pick_port 23800 "$ETCD_PORT")
KAFKA_PORT=$(pick_port 29092 "$ETCD_PORT" "$ETCD_PEER_PORT")
ETCD_EP="127.0.0.1:$ETCD_PORT"
KAFKA_EP="127.0.0.1:$KAFKA_PORT"

# --- 3. services ------------------------------------------------------------------------------------
say "Starting etcd on $ETCD_EP (data in $DEMO_DIR/etcd)"
etcd --name default --data-dir "$DEMO_DIR/etcd/data" \
  --listen-client-urls "http://$ETCD_EP" --advertise-client-urls "http://$ETCD_EP" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
  >"$DEMO_DIR/etcd.log" 2>&1 &
PIDS+=($!)
wait_for "etcd" 20 etcdctl --endpoints="$ETCD_EP" endpoint health
echo "etcd is healthy"

say "Starting the tansu Kafka broker on $KAFKA_EP (in-memory storage)"
(cd "$DEMO_DIR/tansu" && RUST_LOG=warn exec "$TANSU_BIN" broker \
  --listener-url "tcp://$KAFKA_EP" --advertised-listener-url "tcp://$KAFKA_EP" \
  --storage-engine memory://tansu/) >"$DEMO_DIR/tansu.log" 2>&1 &
PIDS+=($!)
wait_for "tansu" 20 port_in_use "$KAFKA_PORT"

say "Creating topic $TOPIC with 3 partitions (tansu does not auto-create topics)"
wait_for "topic creation" 20 "$TANSU_BIN" topic create "$TOPIC" --broker "tcp://$KAFKA_EP" --partitions 3
"$CONSUME_BIN" --brokers "$KAFKA_EP" --topic "$TOPIC" --timeout-secs 10 >/dev/null \
  || die "topic $TOPIC is not readable"
echo "topic $TOPIC exists"
wait_for "topic creation" 20 "$TANSU_BIN" topic create "$HM_TOPIC" --broker "tcp://$KAFKA_EP" --partitions 1
echo "topic $HM_TOPIC exists (host metrics)"

# --- 4. the collect config and the agent ----------------------------------------------------------
nginx_line() {
  printf '127.0.0.1 - - [%s] "GET /%s HTTP/1.1" 200 %d "-" "curl/7.88.1"\n' \
    "$(date -u '+%d/%b/%Y:%H:%M:%S +0000')" "$1" "$((RANDOM % 5000 + 100))"
}
say "Writing 3 lines to $LOG_FILE before the agent starts (it reads new files from the beginning)"
for page in index.html about.html favicon.ico; do nginx_line "$page" >>"$LOG_FILE"; done
cat "$LOG_FILE"

KEY="collect_log_conf/$IP"
# A file entry and a host_metrics entry (every 2 s, three collectors) in the same value.
VALUE="[{\"path\":\"$LOG_FILE\",\"topic\":\"$TOPIC\"},{\"type\":\"host_metrics\",\"topic\":\"$HM_TOPIC\",\"interval_ms\":2000,\"collectors\":[\"cpu\",\"mem\",\"system\"]}]"
say "Putting the collect config for this host into etcd: $KEY"
etcdctl --endpoints="$ETCD_EP" put "$KEY" "$VALUE" >/dev/null
etcdctl --endpoints="$ETCD_EP" get "$KEY"

CONFIG="$DEMO_DIR/logagent.toml"
cat >"$CONFIG" <<EOF
[agent]
ip = "$IP"
state_dir = "$DEMO_DIR/state"

[etcd]
endpoints = ["$ETCD_EP"]
key_template = "collect_log_conf/{ip}"

[kafka]
brokers = ["$KAFKA_EP"]

[http]
listen = ""
EOF
say "Starting the agent: $AGENT_BIN run --config $CONFIG (output in $DEMO_DIR/agent.log)"
cat "$CONFIG"
"$AGENT_BIN" run --config "$CONFIG" >"$DEMO_DIR/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
sleep 2
kill -0 "$AGENT_PID" 2>/dev/null || die "the agent exited right after starting"
echo "agent running as pid $AGENT_PID; its log so far:"
head -n 20 "$DEMO_DIR/agent.log" | sed 's/^/    /'

say "Appending 5 more lines while the agent runs"
for page in api/users api/orders login.html 'search?q=rust' logout.html; do
  nginx_line "$page" | tee -a "$LOG_FILE"
  sleep 0.3
done

# --- 5. the result ------------------------------------------------------------------------------------
TOTAL=$(wc -l <"$LOG_FILE")
say "Reading topic $TOPIC from the beginning of every partition until $TOTAL records arrive"
"$CONSUME_BIN" --brokers "$KAFKA_EP" --topic "$TOPIC" --count "$TOTAL" --timeout-secs 30 --verbose \
  | tee "$DEMO_DIR/consumed.txt" \
  || die "fewer than $TOTAL records reached Kafka"
GOT=$(wc -l <"$DEMO_DIR/consumed.txt")
[ "$GOT" -eq "$TOTAL" ] || die "consumed $GOT of $TOTAL records"

say "Reading host-metric points from topic $HM_TOPIC (InfluxDB line protocol, Telegraf's names)"
"$CONSUME_BIN" --brokers "$KAFKA_EP" --topic "$HM_TOPIC" --count 6 --timeout-secs 30 \
  | tee "$DEMO_DIR/host_metrics.txt" \
  || die "no host-metric points reached Kafka"
grep -q '^cpu,cpu=cpu-total,host=' "$DEMO_DIR/host_metrics.txt" || die "no cpu-total point among the host metrics"

say "Stopping the agent with SIGTERM (it flushes and saves its offsets)"
kill -TERM "$AGENT_PID"
rc=0
wait "$AGENT_PID" || rc=$?
echo "agent exited with status $rc; state dir now holds:"
ls -l "$DEMO_DIR/state"
[ "$rc" -eq 0 ] || die "the agent exited with status $rc on SIGTERM"

say "Demo OK: all $TOTAL lines of $LOG_FILE arrived in Kafka topic $TOPIC, host metrics in $HM_TOPIC"

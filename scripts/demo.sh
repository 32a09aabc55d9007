#!/usr/bin/env bash
# Starts reservoir on a local stack and plays topics/examples through it:
# installs redis-server, Java and Apache Kafka if missing (scripts/deps.sh),
# starts them (unless something already listens on the ports), creates the
# topics, starts the worker, plays
# the examples and prints what a subscriber of inventory.availability and
# inventory.reservations sees. Ctrl-c stops everything it started.
#   scripts/demo.sh          keep running until ctrl-c
#   scripts/demo.sh --once   stop after the examples' output has been shown
set -euo pipefail
cd "$(dirname "$0")/.."
ONCE="${1:-}"
REDIS_PORT="${REDIS_PORT:-6379}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
WORK="${WORK:-$PWD/target/demo}"
mkdir -p "$WORK"
scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
BIN="$PWD/target/release/reservoir"

pids=()
# Stop in reverse start order: the worker commits while the servers still run.
cleanup() {
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# Redis and one Apache Kafka node (KRaft), unless something already listens
# on their ports; "ready:" once both answer.
"$BIN" local --redis-port "$REDIS_PORT" --kafka-port "$KAFKA_PORT" --kafka-controller-port "$((KAFKA_PORT + 1))" --dir "$WORK" >"$WORK/local.out" 2>"$WORK/local.log" &
pids+=($!)
for _ in $(seq 1 1200); do
  grep -q '^ready:' "$WORK/local.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the local stack did not start:" >&2; tail -20 "$WORK/local.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready:' "$WORK/local.out" || { echo "the local stack was not ready within 120 s; see $WORK/local.log" >&2; exit 1; }
echo "Redis on $REDIS_PORT, Apache Kafka on $KAFKA_PORT (data and logs in $WORK)"

export RESERVOIR_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
export RESERVOIR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export RESERVOIR_GROUP_ID="${RESERVOIR_GROUP_ID:-reservoir-demo}"
"$BIN" topics create --partitions 3
"$BIN" run >"$WORK/worker.log" 2>&1 &
pids+=($!)
echo "worker started (log: $WORK/worker.log); playing topics/examples"
"$BIN" tail --topic inventory.availability --topic inventory.reservations --topic inventory.dead-letter >"$WORK/seen.jsonl" &
pids+=($!)
"$BIN" play topics/examples --delay-ms 500
echo "--- what subscribers see (availability, reservations, dead letters):"
tail -n +1 -f "$WORK/seen.jsonl" &
pids+=($!)
if [ "$ONCE" = "--once" ]; then
  # Until the examples' results have arrived, at most 60 s.
  for _ in $(seq 1 600); do
    grep -q '"caused_by":"ex-14"' "$WORK/seen.jsonl" 2>/dev/null && sleep 1 && break
    sleep 0.1
  done
  exit 0
fi
echo "--- running; ctrl-c stops the worker and the servers this script started"
wait

#!/usr/bin/env bash
# Starts reservoir on a local stack and plays topics/examples through it:
# installs redis-server and tansu if missing, starts them (unless something
# already listens on the ports), creates the topics, starts the worker, plays
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

listening() { (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 200); do listening "$1" && return 0; sleep 0.1; done; echo "nothing listens on port $1" >&2; exit 1; }

if ! listening "$REDIS_PORT"; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync everysec --save "" >"$WORK/redis.log" 2>&1 &
  pids+=($!)
fi
if ! listening "$KAFKA_PORT"; then
  # Tansu reads a sqlite path relative to its working directory.
  (cd "$WORK" && exec tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db" >"$WORK/tansu.log" 2>&1) &
  pids+=($!)
fi
wait_port "$REDIS_PORT"; wait_port "$KAFKA_PORT"

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

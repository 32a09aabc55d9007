#!/usr/bin/env bash
# Installs what reservoir needs locally when it is missing: redis-server and
# redis-cli (Debian), and the Tansu broker 0.6.0 (crates.io, ~15 minutes the
# first time). Safe to run again.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "deps: installing redis-server and redis-tools" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
  # The packaged service is not needed; tests and the demo start their own.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if ! command -v make >/dev/null || ! command -v gcc >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential >/dev/null
fi
if ! tansu --version 2>/dev/null | grep -q '0\.6\.0'; then
  echo "deps: installing tansu 0.6.0 (cargo install, takes a while the first time)" >&2
  cargo install tansu --locked --version 0.6.0 --features dynostore,libsql
fi

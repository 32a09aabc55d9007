#!/usr/bin/env bash
# Installs what reservoir needs locally when it is missing, and is safe to
# run again (a second run does nothing and needs no network):
# - redis-server and redis-cli, from Debian;
# - a Java runtime (17+) and Maven, from Debian (openjdk-17-jre-headless, maven);
# - the Apache Kafka broker pinned in scripts/kafka/pom.xml (kafka_2.13 and its
#   runtime dependencies, resolved by Maven from Maven Central) into
#   ${RESERVOIR_KAFKA_LIBS:-~/.cache/reservoir/kafka-VERSION/libs}, where
#   src/local/kafka.rs finds it.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "deps: installing redis-server and redis-tools" >&2
  apt_install redis-server redis-tools
  # The packaged service is not needed; tests and the demo start their own.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if ! command -v make >/dev/null || ! command -v gcc >/dev/null; then
  apt_install build-essential
fi
# librdkafka's TLS and SASL link Debian's OpenSSL; the connectivity tests
# make their throw-away CA with the openssl command.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl 2>/dev/null || ! command -v openssl >/dev/null; then
  apt_install libssl-dev pkg-config openssl
fi

java_ok() {
  local j="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$j" >/dev/null || return 1
  local v
  v=$("$j" -XX:+IgnoreUnrecognizedVMOptions -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}
if ! java_ok; then
  echo "deps: installing openjdk-17-jre-headless (Apache Kafka 4 needs Java 17+)" >&2
  apt_install openjdk-17-jre-headless
fi

VERSION=$(sed -n "/<artifactId>kafka_2.13<\/artifactId>/{n;s:.*<version>\(.*\)</version>.*:\1:p}" scripts/kafka/pom.xml)
LIBS="${RESERVOIR_KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/reservoir/kafka-$VERSION/libs}"
if [ ! -f "$LIBS/.complete" ]; then
  if ! command -v mvn >/dev/null; then
    echo "deps: installing maven" >&2
    apt_install maven
  fi
  echo "deps: resolving Apache Kafka $VERSION with Maven into $LIBS (once)" >&2
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  test -f "$LIBS/kafka_2.13-$VERSION.jar"
  touch "$LIBS/.complete"
fi

# The worker image used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
# librdkafka's TLS and SASL link OpenSSL: libssl-dev and pkg-config, which
# this image has (as scripts/deps.sh installs them on Debian).
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/reservoir /usr/local/bin/reservoir
COPY --from=build /src/topics /srv/topics
WORKDIR /srv
ENTRYPOINT ["reservoir"]
CMD ["run"]

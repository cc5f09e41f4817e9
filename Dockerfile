# kafka-gateway container image.
#
#   docker build -t kafka-gateway .
#   docker run --rm -p 50051:50051 -p 9464:9464 \
#       -e KAFKA_GATEWAY_BOOTSTRAP_SERVERS=kafka:9092 kafka-gateway
#
# Without KAFKA_GATEWAY_BOOTSTRAP_SERVERS the gateway starts its embedded
# in-memory broker: fine for a try, never for data you want to keep.
# .ci/image-check.sh runs this file's build command and its runtime settings
# (ENV, the HEALTHCHECK probe, SIGTERM) outside a container engine.

# --- build: librdkafka is compiled from source (C toolchain, perl, OpenSSL
# and zlib headers), then the gateway, exactly as Cargo.lock pins it. The
# server alone: --no-default-features leaves out the cargo features `bench`
# (kafka-gateway bench) and `client` (kafka-gateway produce), which it never
# runs.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config perl libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
RUN cargo build --release --locked --no-default-features --bin kafka-gateway \
    && install -m 0755 target/release/kafka-gateway /usr/local/bin/kafka-gateway

# --- run: a slim base with OpenSSL's runtime, CA certificates for TLS to
# Kafka, curl for the health check; an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /usr/local/bin/kafka-gateway /usr/local/bin/kafka-gateway
USER 10001:10001
# Serve others, not only loopback; metrics and probes on their own port.
ENV KAFKA_GATEWAY_LISTEN=0.0.0.0:50051 \
    KAFKA_GATEWAY_METRICS_LISTEN=0.0.0.0:9464 \
    KAFKA_GATEWAY_SHUTDOWN_TIMEOUT=25s \
    RUST_LOG=info
# gRPC (kafka_gateway.v1.Producer, grpc.health.v1, reflection), then HTTP
# /metrics, /healthz and /readyz.
EXPOSE 50051 9464
# Live unless the producer hit a fatal error; readiness is /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
# SIGTERM drains: no new streams, every batch read is answered, the producer
# is flushed. Give `docker stop -t` more than KAFKA_GATEWAY_SHUTDOWN_TIMEOUT
# (docker's default is 10 s: use `docker stop -t 30`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["kafka-gateway"]
CMD ["serve"]

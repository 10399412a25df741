# One container is a whole registry node.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin af

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin af \
    && mkdir -p /data && chown af /data
COPY --from=build /src/target/release/af /usr/local/bin/af
USER af
ENV AF_DATA_DIR=/data AF_API=0.0.0.0:5000 AF_GATEWAY=0.0.0.0:8080
VOLUME /data
# 4001: the libp2p swarm (TCP and QUIC).
EXPOSE 5000 8080 4001 4001/udp
# /v2/ answers 401 when authentication is on (the default): either answer means the node serves.
HEALTHCHECK --interval=30s --timeout=5s CMD curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/ | grep -qE '^(200|401)$' || exit 1
ENTRYPOINT ["af"]
CMD ["registry", "serve"]

# One container is a whole registry node.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin af
# Symbols are for profiling on a workstation, not for the image: 31 MB of binary become 25.
RUN strip target/release/af

FROM debian:bookworm-slim
# tini runs as PID 1: it forwards SIGTERM (docker stop, Akash) to the node, which then stops
# gracefully (--shutdown-timeout), and reaps anything orphaned.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin af \
    && mkdir -p /data && chown af /data
COPY --from=build /src/target/release/af /usr/local/bin/af
USER af
# The RPC stays on loopback (its default): it is the operator's, reached with docker exec.
ENV AF_DATA_DIR=/data AF_API=0.0.0.0:5000 AF_GATEWAY=0.0.0.0:8080
VOLUME /data
# 5000: OCI API; 8080: IPFS gateway; 4001: the libp2p swarm (TCP and QUIC).
EXPOSE 5000 8080 4001 4001/udp
# /v2/ answers 401 when authentication is on (the default): either answer means the node serves.
HEALTHCHECK --interval=30s --timeout=5s CMD curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/ | grep -qE '^(200|401)$' || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "af"]
CMD ["registry", "serve"]

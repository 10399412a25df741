# One container is a whole registry node.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# Downloaded crates and compiled dependencies stay in the builder's caches (BuildKit's, buildah's)
# between builds, so a change to the node's code rebuilds the node alone. The binary leaves the
# cache for the next stage stripped: symbols are for profiling on a workstation, not the image.
# PROFILE is Cargo.toml's release profile for the image that ships; scripts/test.sh builds the
# image it runs as Akash would with `image-test`, the same code without link-time optimisation.
ARG PROFILE=release
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --profile "$PROFILE" --locked --bin af && strip -o /af "target/$PROFILE/af"

FROM debian:bookworm-slim
# tini runs as PID 1: it forwards SIGTERM (docker stop, Akash) to the node, which then stops
# gracefully (--shutdown-timeout), and reaps anything orphaned. Nothing else is installed: the
# health check is the node's own binary, and its TLS roots are built in.
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin af \
    && mkdir -p /data && chown af /data
COPY --from=build /af /usr/local/bin/af
USER af
# The RPC stays on loopback (its default): it is the operator's, reached with docker exec.
ENV AF_DATA_DIR=/data AF_API=0.0.0.0:5000 AF_GATEWAY=0.0.0.0:8080
VOLUME /data
# 5000: OCI API; 8080: IPFS gateway; 4001: the libp2p swarm (TCP and QUIC).
EXPOSE 5000 8080 4001 4001/udp
# /v2/ answers 401 when authentication is on (the default): either answer means the node serves.
HEALTHCHECK --interval=30s --timeout=5s CMD ["af", "registry", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "af"]
CMD ["registry", "serve"]

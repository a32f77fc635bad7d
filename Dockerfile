# ferry: a static-enough binary (rustls, no OpenSSL) on a minimal runtime with CA certificates.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/ferry \
    && mkdir -m 0700 /state

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Copy container images between OCI registries, byte for byte" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
# The checkpoint lives on a volume (a PersistentVolumeClaim in Kubernetes). ferry refuses a
# state directory everyone may write to, and runs as 65532: the directory is that user's, 0700.
COPY --from=build --chown=65532:65532 /state /state
VOLUME ["/state"]
WORKDIR /state
# distroless nonroot, by number so Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["--help"]

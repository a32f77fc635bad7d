# ferry: a static-enough binary (rustls, no OpenSSL) on a minimal runtime with CA certificates.
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/ferry

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Copy container images between OCI registries, byte for byte" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
# The checkpoint lives on a volume (a PersistentVolumeClaim in Kubernetes).
VOLUME ["/state"]
WORKDIR /state
# distroless nonroot, by number so Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["--help"]

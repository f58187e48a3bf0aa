# syntax=docker/dockerfile:1
#
# token-vendor container image: a static binary on distroless, running as 65532:65532.
#
#   docker build -t token-vendor:dev .
#
# The build stage links the binary statically against glibc (glibc >= 2.34 has the files
# and dns NSS modules built in, so name resolution works without shared libraries), so
# the final stage needs no libc. scripts/validate-k8s reads the TARGET and STATIC_RUSTFLAGS
# ARG lines and the cargo build line below and repeats the same build on the host: keep
# the build defined here only.

FROM rust:1.95.0-bookworm AS build
ARG TARGET=x86_64-unknown-linux-gnu
ARG STATIC_RUSTFLAGS="-C target-feature=+crt-static"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    RUSTFLAGS="${STATIC_RUSTFLAGS}" cargo build --release --locked --target "${TARGET}" \
 && install -D -m 0755 "target/${TARGET}/release/token-vendor" /out/token-vendor

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="token-vendor" \
      org.opencontainers.image.description="Kubernetes sidecar that vends OAuth2 client-credentials tokens to files, refreshed before they expire" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/token-vendor /token-vendor
USER 65532:65532
# The admin server (/readyz, /livez, /metrics, /status); see listen in the config.
EXPOSE 8099
ENTRYPOINT ["/token-vendor"]
CMD ["run", "--config", "/etc/token-vendor/config.yaml"]

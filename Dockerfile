# syntax=docker/dockerfile:1
#
# token-vendor container image: a static binary on distroless, running as 65532:65532.
#
#   scripts/image                         token-vendor:dev with docker, podman or buildah (--help)
#   docker buildx build -t token-vendor:dev .     by hand; --platform linux/arm64 builds the other one
#
# The build stage links the binary statically against glibc (glibc >= 2.34 has the files
# and dns NSS modules built in, so name resolution works without shared libraries), so
# the final stage needs no libc. scripts/validate-k8s reads the TARGET_<arch> and
# STATIC_RUSTFLAGS ARG lines and the cargo build line below and repeats the same build on
# the host: keep the build defined here only.

FROM rust:1.95.0-bookworm AS build
# BuildKit, podman and buildah set TARGETARCH to the platform being built. The build stage
# runs on that platform (a native builder, or emulation), so each platform builds for its own
# Rust target and needs no cross toolchain (ring compiles C). The release builds each
# platform on a runner of that architecture (.github/workflows/release.yml).
ARG TARGETARCH
ARG TARGET_amd64=x86_64-unknown-linux-gnu
ARG TARGET_arm64=aarch64-unknown-linux-gnu
ARG STATIC_RUSTFLAGS="-C target-feature=+crt-static"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=token-vendor-target-${TARGETARCH},target=/src/target,sharing=locked \
    case "${TARGETARCH:-amd64}" in \
      amd64) TARGET="${TARGET_amd64}" ;; \
      arm64) TARGET="${TARGET_arm64}" ;; \
      *) echo "TARGETARCH ${TARGETARCH} is not supported: build linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac \
 && RUSTFLAGS="${STATIC_RUSTFLAGS}" cargo build --release --locked --target "${TARGET}" \
 && install -D -m 0755 "target/${TARGET}/release/token-vendor" /out/token-vendor

FROM gcr.io/distroless/static-debian12:nonroot
# BuildKit's SBOM (--sbom=true, as the release builds) then also lists the crates of the build
# context's Cargo.lock, not only the base image's packages: the binary is static.
ARG BUILDKIT_SBOM_SCAN_CONTEXT=true
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

# One of Sluice's reference connectors as an image: the static binary at
# /connector (where a task's connector container looks for it when
# AIRBYTE_ENTRYPOINT is unset), on busybox for the shell of the task's
# attach wrapper. Non-root.
#
#   docker build -f task-images/connector.Dockerfile --build-arg CONNECTOR=source-faker -t sluice/source-faker:0.1.0 .
#
# CONNECTOR is one of task-images/connectors/ (source-faker, destination-postgres,
# destination-s3 ...; source-empty is the source of reset and clear jobs). BASE and BINARIES as
# in orchestrator.Dockerfile (`host`: the static binary named CONNECTOR at
# the build context's root, beside the CA bundle `ca-certificates.crt`).
ARG BASE=busybox:1.37-musl
ARG BINARIES=build

FROM rust:1.95-slim-bookworm AS build
ARG CONNECTOR=source-faker
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --profile lambda --target "$(uname -m)-unknown-linux-musl" -p "sluice-${CONNECTOR}" --bin "${CONNECTOR}" \
    && cp "target/$(uname -m)-unknown-linux-musl/lambda/${CONNECTOR}" /connector \
    && cp /etc/ssl/certs/ca-certificates.crt /ca-certificates.crt

FROM scratch AS host
ARG CONNECTOR=source-faker
COPY ${CONNECTOR} /connector
COPY ca-certificates.crt /ca-certificates.crt

FROM ${BINARIES} AS binaries

FROM ${BASE}
COPY --from=binaries /connector /connector
# The CA bundle for connectors that reach HTTPS services with the system's
# roots (destination-s3's AWS SDK).
COPY --from=binaries /ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /sluice
ENTRYPOINT ["/connector"]

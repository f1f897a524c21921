# The platform container's image: the static `orchestrator` (legacy mode)
# and `bookkeeper` (socket mode) binaries on busybox, whose POSIX shell and
# mkfifo the task's containers use (the init step makes the pipes and the
# sockets' directory; `orchestrator fetch-files` and `orchestrator ask` run
# in it too). A sync task runs one or the other, as its plan's data channel
# says. Non-root; about 1.5 MB of busybox plus the binaries.
#
#   docker build -f task-images/orchestrator.Dockerfile -t sluice/orchestrator:0.1.0 .
#
# Built for the platform it runs on (docker buildx --platform linux/arm64,linux/amd64).
# Needs BuildKit (the default builder since Docker 23).
#
# Build arguments, for machines with no registry (task-images/build-images.sh):
#   BASE      the base image (busybox:1.37-musl)
#   BINARIES  `build` compiles the binaries in a Rust image (the default);
#             `host` takes `orchestrator` and `bookkeeper`, static, from the
#             build context's root instead, and skips the Rust stage.
ARG BASE=busybox:1.37-musl
ARG BINARIES=build

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --profile lambda --target "$(uname -m)-unknown-linux-musl" -p sluice-orchestrator -p sluice-bookkeeper \
    && mkdir /out && cp "target/$(uname -m)-unknown-linux-musl/lambda/orchestrator" "target/$(uname -m)-unknown-linux-musl/lambda/bookkeeper" /out/

FROM scratch AS host
COPY orchestrator bookkeeper /out/

FROM ${BINARIES} AS binaries

FROM ${BASE}
COPY --from=binaries /out/orchestrator /out/bookkeeper /usr/local/bin/
USER 65532:65532
WORKDIR /sluice
ENTRYPOINT ["orchestrator"]

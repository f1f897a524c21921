# syntax=docker/dockerfile:1
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
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --profile lambda --target "$(uname -m)-unknown-linux-musl" -p sluice-orchestrator -p sluice-bookkeeper \
    && cp "target/$(uname -m)-unknown-linux-musl/lambda/orchestrator" "target/$(uname -m)-unknown-linux-musl/lambda/bookkeeper" /

FROM busybox:1.37-musl
COPY --from=build /orchestrator /bookkeeper /usr/local/bin/
USER 65532:65532
WORKDIR /sluice
ENTRYPOINT ["orchestrator"]

# syntax=docker/dockerfile:1
# The bookkeeper alone: socket mode's platform container, for a task that
# runs it on its own (the ECS and Docker executors use the orchestrator
# image, which carries both programs). Static musl binary on busybox,
# non-root. It never touches a record: records go from source to
# destination over the sockets on the task's shared volume.
#
#   docker build -f task-images/bookkeeper.Dockerfile -t sluice/bookkeeper:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --profile lambda --target "$(uname -m)-unknown-linux-musl" -p sluice-bookkeeper --bin bookkeeper \
    && cp "target/$(uname -m)-unknown-linux-musl/lambda/bookkeeper" /bookkeeper

FROM busybox:1.37-musl
COPY --from=build /bookkeeper /usr/local/bin/bookkeeper
USER 65532:65532
WORKDIR /sluice
ENV PLATFORM_MODE=BOOKKEEPER
ENTRYPOINT ["bookkeeper"]

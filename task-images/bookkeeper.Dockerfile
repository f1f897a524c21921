# The bookkeeper alone: socket mode's platform container, for a task that
# runs it on its own (the ECS and Docker executors use the orchestrator
# image, which carries both programs). Static musl binary on busybox,
# non-root. It never touches a record: records go from source to
# destination over the sockets on a volume the two connectors share.
#
#   docker build -f task-images/bookkeeper.Dockerfile -t sluice/bookkeeper:0.1.0 .
#
# BASE and BINARIES as in orchestrator.Dockerfile (`host`: a static
# `bookkeeper` at the build context's root).
ARG BASE=busybox:1.37-musl
ARG BINARIES=build

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --profile lambda --target "$(uname -m)-unknown-linux-musl" -p sluice-bookkeeper --bin bookkeeper \
    && mkdir /out && cp "target/$(uname -m)-unknown-linux-musl/lambda/bookkeeper" /out/

FROM scratch AS host
COPY bookkeeper /out/

FROM ${BINARIES} AS binaries

FROM ${BASE}
COPY --from=binaries /out/bookkeeper /usr/local/bin/bookkeeper
USER 65532:65532
WORKDIR /sluice
ENV PLATFORM_MODE=BOOKKEEPER
ENTRYPOINT ["bookkeeper"]

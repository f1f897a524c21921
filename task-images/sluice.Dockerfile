# syntax=docker/dockerfile:1
# The `sluice` command in an image: `sluice provision` and `sluice up --aws`
# against LocalStack or AWS (localstack/docker-compose.yml runs it). Python
# and uv are there because `sluice up`'s local executor installs Airbyte's
# PyPI connectors into virtualenvs; image-only connectors run through the
# Docker socket a user may mount. Non-root.
#
#   docker build -f task-images/sluice.Dockerfile -t sluice/sluice:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sluice-cli --bin sluice \
    && cp target/release/sluice /sluice

FROM python:3.12-slim-bookworm
RUN pip install --no-cache-dir uv==0.9.* \
    && useradd --create-home --uid 65532 sluice \
    && mkdir /data && chown sluice /data
COPY --from=build /sluice /usr/local/bin/sluice
USER sluice
WORKDIR /home/sluice
ENV SLUICE_CACHE_DIR=/home/sluice/cache
ENTRYPOINT ["sluice"]

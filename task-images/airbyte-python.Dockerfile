# An Airbyte Python connector from PyPI, laid out as Airbyte's own Python
# images are: the code under /airbyte/integration_code, whose main.py runs
# the connector; AIRBYTE_ENTRYPOINT names that program; the user is uid
# 1000, not root. So an image-only definition built from this runs in a
# Sluice task exactly as Airbyte's published image would.
#
#   docker build -f task-images/airbyte-python.Dockerfile \
#       --build-arg PACKAGE=airbyte-source-faker==7.2.1 --build-arg PROGRAM=source-faker \
#       -t airbyte/source-faker:7.2.1 task-images
#
# PROGRAM is the package's console script. BASE is any Debian-like image
# with Python 3.10+ and its venv module (the tests use one made with
# debootstrap). Where the package index is reached through a TLS proxy,
# give pip its CA bundle as a build secret: --secret id=pip_cert,src=FILE
# (it is mounted for the install step only and is in no layer).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PACKAGE
ARG PROGRAM
WORKDIR /airbyte/integration_code
COPY airbyte-main.py main.py
RUN --mount=type=secret,id=pip_cert \
    test -n "$PACKAGE" && test -n "$PROGRAM" \
    && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /airbyte/venv \
    && /airbyte/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$PACKAGE" \
    && sed -i "s/@PROGRAM@/$PROGRAM/" main.py \
    && /airbyte/venv/bin/python main.py spec > /dev/null
ENV PATH=/airbyte/venv/bin:$PATH \
    AIRBYTE_ENTRYPOINT="python /airbyte/integration_code/main.py"
USER 1000:1000
ENTRYPOINT ["python", "/airbyte/integration_code/main.py"]

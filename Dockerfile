# syntax=docker/dockerfile:1
# The fedgate gateway image.
#
#   docker build -t fedgate:0.1.0 .
#   docker run --rm -v $PWD/gateway.yaml:/etc/fedgate/gateway.yaml:ro -p 8080:8080 fedgate:0.1.0
#
# Stage 1 builds wheels for fedgate and every dependency (with a compiler, for any
# dependency without a binary wheel for the platform); stage 2 installs them from those
# wheels only, with no compiler, no package index and no source tree, and runs as an
# unprivileged user. Kubernetes probes the admin listener (/healthz, /readyz), so the
# image declares no HEALTHCHECK of its own.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY federation ./federation
COPY gateway ./gateway
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 fedgate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fedgate \
      --no-create-home --shell /usr/sbin/nologin fedgate \
 && mkdir -p /etc/fedgate /var/lib/fedgate \
 && chown 10001:10001 /var/lib/fedgate
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels fedgate
WORKDIR /var/lib/fedgate
USER 10001:10001
# public, public TLS, east-west (mutual TLS), admin
EXPOSE 8080 8443 15443 9901
HEALTHCHECK NONE
ENTRYPOINT ["fedgate"]
CMD ["serve", "--config", "/etc/fedgate/gateway.yaml"]

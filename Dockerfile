# syntax=docker/dockerfile:1
# The kube-sessions image: `kubesessions operator` and `kubesessions gateway` (the Helm
# chart's `image`). Build from the repository root:
#   docker build -t ghcr.io/kube-sessions/kube-sessions:0.1.0 .
# Pin the base by digest for a release, as worker-image/Dockerfile explains. BASE_IMAGE is any
# image with Python >= 3.11 and pip (`make images` builds one from Debian packages).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY worker-image ./worker-image
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[operator]'

FROM ${BASE_IMAGE}
# Read-only root filesystem at run time: only /tmp (an emptyDir) is writable.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp HOME=/tmp PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install --compile --no-index --find-links /wheels 'kube-sessions[operator]' \
    && rm -rf /wheels \
    && groupadd --gid 10001 kubesessions \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubesessions
USER 10001:10001
ENTRYPOINT ["kubesessions"]

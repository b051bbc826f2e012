# syntax=docker/dockerfile:1
# Service image for the scale-out stack (docker-compose.yml): `provenance serve` by default,
# `provenance worker` for Celery generation workers. The build context is filtered by .dockerignore
# (only pyproject.toml, README.md, provenance/, generator/ and the npm lock files get in: never
# data/, keys, .venv, node_modules or .git).

# 1. The wheel. Migrations and contract artifacts are package data (found with importlib.resources),
#    so the wheel is all the service needs from this repository.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provenance provenance
COPY generator generator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. anvil, for the embedded dev chain (used only when RPC_URL is unset): the npm package's binary,
#    at the version package-lock.json pins. Only the binary goes into the image, not Node.
FROM node:20-slim AS anvil
WORKDIR /tools
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# 3. The runtime image.
FROM python:3.11-slim
# libgl1/libglib2.0-0: OpenCV; openssl: the embedded RFC 3161 time-stamp authority.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 openssl \
 && rm -rf /var/lib/apt/lists/*
# torch first and pinned (the version pyproject.toml pins), from the CPU wheel index by default so
# nothing pulls multi-GB CUDA wheels. A GPU worker image passes another index, e.g.
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/provenance-*.whl)[postgres]" && rm -rf /wheels
# On PATH, so find_anvil() finds it (PROVENANCE_ANVIL_BINARY can point elsewhere).
COPY --from=anvil /tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil

# A fixed non-root user: files mounted into the container (compose secrets are bind mounts that keep
# the host's owner and mode) must be readable by uid 10001.
RUN groupadd --system --gid 10001 provenance \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/provenance --create-home provenance \
 && mkdir -p /data /models \
 && chown provenance:provenance /data
USER 10001:10001
WORKDIR /home/provenance
ENV PROVENANCE_DATA_DIR=/data PROVENANCE_HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
  CMD ["python", "-c", "import os, sys, httpx; port = os.environ.get('PROVENANCE_PORT', '8000'); sys.exit(httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=4).status_code != 200)"]
CMD ["provenance", "serve"]

# Service image for the scale-out stack (docker-compose.yml). CPU torch by default; a GPU image
# installs its own torch build before `pip install .`.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm libgl1 libglib2.0-0 openssl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# TORCH_PIP_ARGS lets an image pick its torch build (e.g. a CPU-only or a CUDA wheel index).
ARG TORCH_PIP_ARGS=""
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_PIP_ARGS} \
 && pip install --no-cache-dir '.[postgres]'
ENV PROVENANCE_DATA_DIR=/data PROVENANCE_HOST=0.0.0.0
EXPOSE 8000
CMD ["provenance", "serve"]

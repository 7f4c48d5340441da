# One image for every role of the MetaCluster service; the command picks the role:
#   api:     uvicorn --factory service.app:create_app --host 0.0.0.0 --port 8000
#   worker:  celery -A worker.celery_app:app worker --pool=solo -Q gpu
#   migrate: alembic upgrade head
#   all-in-one (embedded, no external services): metacluster serve --host 0.0.0.0
FROM python:3.11-slim AS base

# CPU wheels by default (small image); a CUDA build of torch for GPU workers:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# GPU workers add the `gpu` extra (faiss-gpu) for the K-means index on CUDA.
ARG EXTRAS=api,worker

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    METACLUSTER_DATA_DIR=/data

# libgomp: OpenMP runtime of torch and faiss.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, in its own layer: the largest download, and it changes least.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Dependencies before the source, so editing code does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p metacluster core service worker \
    && touch metacluster/__init__.py core/__init__.py service/__init__.py worker/__init__.py \
    && pip install ".[${EXTRAS}]" \
    && pip uninstall -y metacluster

COPY metacluster ./metacluster
COPY core ./core
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps -e .

RUN useradd --create-home --uid 1000 metacluster \
    && mkdir -p /data \
    && chown metacluster:metacluster /data
USER metacluster
VOLUME ["/data"]
EXPOSE 8000

CMD ["metacluster", "serve", "--host", "0.0.0.0", "--port", "8000"]

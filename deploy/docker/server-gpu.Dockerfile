# tlserve-server on NVIDIA GPUs: onnxruntime-gpu with CUDA and cuDNN from NVIDIA's wheels,
# so any Debian-like base works and the host needs only the driver (NVIDIA Container
# Toolkit). Build from the repository root:
#   docker build -f deploy/docker/server-gpu.Dockerfile -t tlserve-server-gpu:0.1.0 .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Exactly the locked versions (deploy/locks/, `make locks`), in a layer of their own that
# a change to the sources does not invalidate.
COPY deploy/locks/server-gpu.txt /tmp/lock.txt
RUN python3 -m venv /opt/tlserve \
    && /opt/tlserve/bin/pip install --no-cache-dir --no-deps -r /tmp/lock.txt
# onnxruntime-gpu instead of the CPU wheel (both provide `onnxruntime`; with both
# installed the CPU one can win): the build fails here if the CPU wheel crept in or the
# CUDA provider is missing.
RUN if /opt/tlserve/bin/pip show onnxruntime >/dev/null 2>&1; then \
      echo "the CPU onnxruntime wheel is installed beside onnxruntime-gpu" >&2; exit 1; fi \
    && /opt/tlserve/bin/python -c "import onnxruntime as ort; \
providers = ort.get_available_providers(); \
assert 'CUDAExecutionProvider' in providers, f'no CUDA provider in {providers}'"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients clients
COPY proto proto
COPY server server
# The trainer's sources too (one distribution); TensorFlow is not installed here.
COPY trainer trainer
# tlserve itself, its dependencies from the lock; `pip check` fails the build if one is missing.
RUN /opt/tlserve/bin/pip install --no-cache-dir --no-deps . && /opt/tlserve/bin/pip check

FROM ${BASE_IMAGE}
COPY --from=build /opt/tlserve /opt/tlserve
RUN useradd --uid 10001 --gid 0 --home-dir /data --no-create-home --shell /usr/sbin/nologin tlserve \
    && mkdir -p /data /registry \
    && chown 10001:0 /data /registry && chmod 0770 /data /registry
USER 10001:0
WORKDIR /data
ENV PATH=/opt/tlserve/bin:$PATH HOME=/data TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry \
    TLSERVE_HOST=0.0.0.0 TLSERVE_METRICS_HOST=0.0.0.0 PYTHONDONTWRITEBYTECODE=1 \
    TLSERVE_EXECUTION_PROVIDER=cuda TLSERVE_MAX_BATCH_SIZE=64 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 50051 8000 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["tlserve-server", "probe", "live"]
ENTRYPOINT ["tlserve-server"]

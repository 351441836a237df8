# tlserve-server on NVIDIA GPUs: onnxruntime-gpu (CUDA 12 wheels bring their own libraries).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY server ./server
RUN python3.11 -m pip install --no-cache-dir ".[server,gpu]" && pip uninstall -y onnxruntime || true
# Beyond loopback the server needs TLS and credentials (see deploy/README.md).
ENV TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry TLSERVE_EXECUTION_PROVIDER=cuda \
    TLSERVE_MAX_BATCH_SIZE=64 TLSERVE_HOST=0.0.0.0 TLSERVE_METRICS_HOST=0.0.0.0
EXPOSE 50051 8000 9464
ENTRYPOINT ["tlserve-server"]

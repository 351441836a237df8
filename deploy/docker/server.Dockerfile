# tlserve-server, CPU: ONNX Runtime, no TensorFlow (the serving image stays small).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY server ./server
RUN pip install --no-cache-dir ".[server]" && useradd --uid 10001 tlserve
USER 10001
# In a container the API must listen beyond loopback, so the server needs TLS and
# credentials (or TLSERVE_INSECURE=true on a trusted network) to start: see deploy/README.md.
ENV TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry TLSERVE_HOST=0.0.0.0 \
    TLSERVE_METRICS_HOST=0.0.0.0
EXPOSE 50051 8000 9464
ENTRYPOINT ["tlserve-server"]

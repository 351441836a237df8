# tlserve-server, CPU: ONNX Runtime, no TensorFlow (the serving image stays small).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY server ./server
RUN pip install --no-cache-dir ".[server]" && useradd --uid 10001 tlserve
USER 10001
ENV TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry
EXPOSE 50051 8000 9464
ENTRYPOINT ["tlserve-server"]

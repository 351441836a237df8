# tlserve-trainer: TensorFlow/Keras transfer learning, ONNX export, publication.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY server ./server
COPY trainer ./trainer
RUN pip install --no-cache-dir ".[trainer]" && useradd --uid 10001 tlserve
USER 10001
ENV TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry KERAS_HOME=/data/keras
EXPOSE 9465
ENTRYPOINT ["tlserve-trainer"]
CMD ["run"]

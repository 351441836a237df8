# tlserve-trainer: TensorFlow/Keras transfer learning, ONNX export, publication.
#   docker build -f deploy/docker/trainer.Dockerfile -t tlserve-trainer:0.1.0 .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Exactly the locked versions (deploy/locks/, `make locks`), in a layer of their own that
# a change to the sources does not invalidate.
COPY deploy/locks/trainer.txt /tmp/lock.txt
RUN python3 -m venv /opt/tlserve \
    && /opt/tlserve/bin/pip install --no-cache-dir --no-deps -r /tmp/lock.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients clients
COPY proto proto
COPY server server
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
# Run records and TensorBoard logs go under /data/trainer, Keras' weight downloads under
# /data/keras: mount a volume at /data to keep both across restarts.
ENV PATH=/opt/tlserve/bin:$PATH HOME=/data TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry \
    KERAS_HOME=/data/keras TLSERVE_METRICS_HOST=0.0.0.0 PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2
EXPOSE 9465
# Live while its metrics endpoint answers (a run may take many minutes; the loop reports
# its state in the store and in tlserve_trainer_state).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('TLSERVE_METRICS_PORT', '9465'), timeout=5)"]
ENTRYPOINT ["tlserve-trainer"]
CMD ["run"]

# tlserve-server, CPU: ONNX Runtime, no TensorFlow. Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t tlserve-server:0.1.0 .
# BASE_IMAGE is any Debian-like image with python3.11 and its venv module
# (`make deploy-check` builds one with debootstrap where no registry is reachable).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Exactly the locked versions (deploy/locks/, `make locks`), in a layer of their own that
# a change to the sources does not invalidate.
COPY deploy/locks/server.txt /tmp/lock.txt
RUN python3 -m venv /opt/tlserve \
    && /opt/tlserve/bin/pip install --no-cache-dir --no-deps -r /tmp/lock.txt
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
# Runs as uid 10001, group 0, owning its data folders (group-writable too, for platforms
# that pick an arbitrary uid in group 0). Nothing else in the image is writable by it.
RUN useradd --uid 10001 --gid 0 --home-dir /data --no-create-home --shell /usr/sbin/nologin tlserve \
    && mkdir -p /data /registry \
    && chown 10001:0 /data /registry && chmod 0770 /data /registry
USER 10001:0
WORKDIR /data
# In a container the API listens beyond loopback, so the server needs TLS and credentials
# (or TLSERVE_INSECURE=true on a trusted network) to start: see deploy/README.md.
ENV PATH=/opt/tlserve/bin:$PATH HOME=/data TLSERVE_DATA_DIR=/data TLSERVE_REGISTRY_DIR=/registry \
    TLSERVE_HOST=0.0.0.0 TLSERVE_METRICS_HOST=0.0.0.0 PYTHONDONTWRITEBYTECODE=1
EXPOSE 50051 8000 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["tlserve-server", "probe", "live"]
ENTRYPOINT ["tlserve-server"]

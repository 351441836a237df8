# An S3 protocol server (moto's standalone server), for `make deploy-check` only.
ARG BASE_IMAGE=tlserve-base:bookworm
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/moto && /opt/moto/bin/pip install --no-cache-dir "moto[server]==5.2.5"
USER 10001
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]

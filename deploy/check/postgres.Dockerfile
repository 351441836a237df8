# PostgreSQL 15 from Debian, for `make deploy-check` only (where no registry serves the
# official image). Password authentication over the network; the data in a subfolder of
# the volume, so a volume's lost+found cannot break initdb.
ARG BASE_IMAGE=tlserve-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /run/postgresql
USER postgres
ENV PGDATA=/var/lib/postgresql/data/pgdata PATH=/usr/lib/postgresql/15/bin:$PATH
EXPOSE 5432
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB name the one database and its owner.
CMD ["sh", "-ec", "\
if [ ! -s \"$PGDATA/PG_VERSION\" ]; then \
  printf '%s' \"$POSTGRES_PASSWORD\" > /tmp/pw; \
  initdb -U \"$POSTGRES_USER\" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null; \
  rm /tmp/pw; \
  echo \"host all all 0.0.0.0/0 scram-sha-256\" >> \"$PGDATA/pg_hba.conf\"; \
  pg_ctl -w -o '-c listen_addresses=' start >/dev/null; \
  createdb -U \"$POSTGRES_USER\" \"$POSTGRES_DB\"; \
  pg_ctl -w stop >/dev/null; \
fi; \
exec postgres -c listen_addresses='*'"]
HEALTHCHECK --interval=2s --timeout=3s --retries=30 CMD ["pg_isready", "-h", "127.0.0.1"]

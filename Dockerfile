# twigate — multi-stage image on Debian bookworm.
#   docker build -t twigate .
#   docker run -p 8080:8080 -v twigate-data:/var/lib/twigate twigate
# Configuration: mount a file at /etc/twigate/twigate.conf and/or pass
# TWIGATE_<KEY> environment variables (docs/configuration.md).

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config \
      libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libxml2-dev \
      libsqlite3-dev libpq-dev libssl-dev libmp3lame-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include ./include
COPY src ./src
COPY tools ./tools
COPY console ./console
COPY conf ./conf
COPY docs/twigate.8 ./docs/twigate.8
RUN make -j"$(nproc)" all \
 && make install PREFIX=/usr DESTDIR=/out

FROM debian:bookworm-slim AS runtime
# Only the shared libraries the binaries link against (scripts/check-docker.sh
# verifies these names resolve with apt).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmicrohttpd12 libcurl4 \
      libjansson4 libxml2 libsqlite3-0 libpq5 libssl3 libmp3lame0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/twigate --shell /usr/sbin/nologin twigate \
 && install -d -o twigate -g twigate /var/lib/twigate
COPY --from=build /out/ /
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER twigate
WORKDIR /var/lib/twigate
VOLUME ["/var/lib/twigate"]
ENV TWIGATE_DB_PATH=/var/lib/twigate/twigate.db \
    TWIGATE_LISTEN_ADDRESS=0.0.0.0
EXPOSE 8080
# SIGTERM drains within shutdown.grace_ms (10 s by default): run the
# container with --stop-timeout larger than the grace (docs/operations.md).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${TWIGATE_LISTEN_PORT:-8080}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]

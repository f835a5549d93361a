# cancel-gateway: a slim image that runs `cancel-gateway serve` as a non-root user.
#
# Stopping: SIGTERM closes the listening socket, then in-flight cancellations get up to
# server.drain_timeout_s to finish (by default the longest connection budget, at least 10 s).
# `docker stop` waits only 10 s before SIGKILL, so give it more than the drain:
# `docker stop -t 30`, `docker run --stop-timeout 30`, Compose `stop_grace_period: 30s`,
# Kubernetes `terminationGracePeriodSeconds` (30 by default) above the drain plus any preStop.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_CONFIG=/app/config/gateway.yaml \
    GATEWAY_DB=/var/lib/cancel-gateway/cancel-gateway.db

# A fixed uid/gid: USER below is numeric, so Kubernetes' runAsNonRoot can verify it, and the
# volume's files belong to the same ids in every image.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 /var/lib/cancel-gateway
VOLUME ["/var/lib/cancel-gateway"]

WORKDIR /app
# The pinned dependencies (every store backend and the OpenTelemetry exporter: the image serves
# any configuration) in a layer of their own, which a change to the source does not rebuild.
COPY docker/requirements.txt ./docker/
RUN pip install --no-deps --requirement docker/requirements.txt

COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
# --no-deps: nothing beyond the pinned list; `pip check` fails the build if it falls short.
RUN pip install --no-deps . && pip check
COPY config ./config

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# The slim image has no curl: Python's standard library asks /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["cancel-gateway"]
CMD ["serve"]

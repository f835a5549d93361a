# cancel-gateway: a slim image that runs `cancel-gateway serve` as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_CONFIG=/app/config/gateway.yaml \
    GATEWAY_DB=/var/lib/cancel-gateway/cancel-gateway.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Every store backend and the OpenTelemetry exporter: the image serves any configuration.
RUN pip install ".[redis,postgres,otel]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && install -d -o gateway -g gateway /var/lib/cancel-gateway
VOLUME ["/var/lib/cancel-gateway"]
COPY config ./config

USER gateway
EXPOSE 8080

# The slim image has no curl: Python's standard library asks /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["cancel-gateway"]
CMD ["serve"]

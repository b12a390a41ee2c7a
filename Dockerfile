# The gateway on a slim Python base, as an unprivileged user.
#   docker build -t api-key-gateway .
#   docker run -p 8080:8080 -e GATEWAY_UPSTREAM_URL=http://api.internal:9000 -v gateway-data:/data api-key-gateway
# EXTRAS adds optional backends: --build-arg EXTRAS="[postgres,redis]" (deploy/docker-compose.yml).
FROM python:3.11-slim

ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 gateway \
    && mkdir /data && chown gateway /data

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
COPY upstream_stub ./upstream_stub
# The versions the tests passed with.
RUN pip install -c constraints.txt ".${EXTRAS}" && rm -rf /src
COPY config.yaml /etc/gateway/config.yaml

USER gateway
WORKDIR /data
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_STORE_URL=sqlite:////data/gateway.db
VOLUME ["/data"]
EXPOSE 8080

# The public listener reserves no path for the gateway (every path is the upstream's), so the
# check is that it accepts connections.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 8080), timeout=2).close()"]

# 0.0.0.0: inside a container the port is reached through Docker's network.
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]

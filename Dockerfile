# The gateway on a slim Python base, as an unprivileged user; the upstream stub in an image of its own.
#   docker build -t api-key-gateway .                              # the gateway: the last stage
#   docker build --target stub -t mockup-upstream-stub .           # the stub, to try the gateway out
#   docker run --stop-timeout 40 -p 8080:8080 -e GATEWAY_UPSTREAM_URL=http://api.internal:9000 \
#       -e GATEWAY_ADMIN_TOKEN -v gateway-data:/data api-key-gateway
# EXTRAS adds optional backends: --build-arg EXTRAS="[postgres,redis]" (deploy/docker-compose.yml).
#
# Stopping: `docker stop` sends SIGTERM (STOPSIGNAL below), and the gateway lets requests in flight
# finish for up to listen.shutdown_timeout (30s by default) before it exits. Docker kills the
# container after its stop timeout, 10 s unless told otherwise, which an image cannot set: run it
# with `docker run --stop-timeout 40` (compose: stop_grace_period; Kubernetes:
# terminationGracePeriodSeconds), at least the shutdown timeout plus a few seconds.
#
# Health: the HEALTHCHECK asks /readyz on the admin listener (127.0.0.1:8081 inside the container;
# no token is needed for it), so the admin listener must be on: give the container an admin token
# (GATEWAY_ADMIN_TOKEN, or admin.token_file / admin.tokens in the config, as deploy/ does).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 gateway
WORKDIR /src
# The versions the tests passed with.
COPY constraints.txt ./


# The upstream stub (stub/pyproject.toml): for demos and tests, never in the gateway's image.
FROM base AS stub
COPY stub/pyproject.toml ./stub/
COPY upstream_stub ./upstream_stub
RUN pip install -c constraints.txt ./stub && rm -rf /src
USER gateway
WORKDIR /home/gateway
EXPOSE 9000
CMD ["upstream-stub", "--host", "0.0.0.0", "--port", "9000"]


# The gateway (pyproject.toml packages gateway/ alone): the default target, being the last.
FROM base AS gateway

ARG EXTRAS=""

RUN mkdir /data && chown gateway /data
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install -c constraints.txt ".${EXTRAS}" && rm -rf /src
COPY config.yaml /etc/gateway/config.yaml

USER gateway
# The store's default, sqlite:///./gateway.db, is then /data/gateway.db: no store URL is set here,
# so the one a deployment gives through the environment is the only one.
WORKDIR /data
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml
VOLUME ["/data"]
EXPOSE 8080

STOPSIGNAL SIGTERM

# /readyz answers 200 when the key store answers (and the upstream, with health.check_upstream),
# 503 otherwise (urlopen raises: exit 1); nothing listening on 8081 (no admin token) fails too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8081/readyz', timeout=2).status != 200)"]

# 0.0.0.0: inside a container the port is reached through Docker's network.
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]

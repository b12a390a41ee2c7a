"""deploy/: Docker does not run on this machine, so the compose file is checked for what can be
checked here: it parses, and its services, config, environment and load balancer agree."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from gateway.config import ENV_OVERRIDES, load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_has_two_replicas_and_what_they_share() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway-a", "gateway-b", "lb", "upstream", "postgres", "redis"}
    assert services["gateway-a"] == services["gateway-b"]


def test_each_replica_loads_its_config_and_may_run_workers() -> None:
    gateway = compose()["services"]["gateway-a"]
    environment = gateway["environment"]
    assert set(environment) <= set(ENV_OVERRIDES) | {"GATEWAY_CONFIG", "GATEWAY_ADMIN_TOKEN"}
    [mount] = gateway["volumes"]
    source, target, _ = mount.split(":")
    assert target == environment["GATEWAY_CONFIG"]
    config = load_config(DEPLOY / source, environ=environment)
    assert config.store.url.startswith("postgresql://") and config.redis.url is not None
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8080)
    # --workers above 1 is allowed only with redis.url, which is set.
    assert gateway["command"][:2] == ["gateway", "serve"] and "--workers" in gateway["command"]
    # The upstream, the store and Redis it names are services of the file, on their ports.
    services = compose()["services"]
    assert config.upstream.url == "http://upstream:9000" and services["upstream"]["command"][-1] == "9000"
    assert "@postgres:5432/" in config.store.url and config.redis.url.startswith("redis://redis:6379/")
    assert set(gateway["depends_on"]) == {"postgres", "redis", "upstream"}


def test_the_load_balancer_spreads_over_both_replicas() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"server (gateway-[ab]):(\d+);", conf) == [("gateway-a", "8080"), ("gateway-b", "8080")]
    [mount] = compose()["services"]["lb"]["volumes"]
    assert mount.startswith("./nginx.conf:")


def test_each_image_installs_the_extras_its_config_uses_at_the_locked_versions() -> None:
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile and 'pip install -c constraints.txt ".${EXTRAS}"' in dockerfile
    extras = compose()["services"]["gateway-a"]["build"]["args"]["EXTRAS"]
    # The replicas' config uses a PostgreSQL store and Redis (checked above).
    assert set(extras.strip("[]").split(",")) == {"postgres", "redis"}


def test_every_dependency_is_installed_at_its_locked_version() -> None:
    # scripts/test installs from constraints.txt: a dependency added or moved without running
    # scripts/lock shows here, before a fresh machine gets other versions than these tests did.
    locked = {}
    for line in (DEPLOY.parent / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            locked[canonical(name)] = pinned
    wanted = [Requirement(text) for text in metadata.requires("api-key-gateway") or []]
    for requirement in wanted:
        if requirement.marker is None or requirement.marker.evaluate({"extra": "test"}):
            assert canonical(requirement.name) in locked, f"{requirement.name} is not in constraints.txt"
    installed = {name: metadata.version(name) for name in locked}
    assert installed == locked


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

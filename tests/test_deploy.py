"""deploy/ and the Dockerfile: Docker does not run on this machine, so what can be checked here is:
the files parse, the Kubernetes manifests validate against the API's schemas (offline, with
kubernetes-validate), and the services, config, environment, secrets, probes and stop grace agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from gateway.config import ENV_OVERRIDES, GatewayConfig, load_config
from gateway.units import parse_duration

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The Kubernetes release whose schemas the manifests are checked against (kubernetes-validate
# ships them): one the Deployment's fields all exist in.
KUBERNETES_VERSION = "1.30.0"
TOKEN = "a-test-admin-token-0123456789"
# The stop grace beyond listen.shutdown_timeout: the exit itself (usage written, store closed).
EXIT_MARGIN = 5.0


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def load_with_token(path: Path, environ: dict[str, str], tmp_path: Path) -> GatewayConfig:
    """The config at ``path``, its admin.token_file (a mounted secret) replaced by a file of ours."""
    settings = yaml.safe_load(path.read_text())
    assert settings["admin"]["token_file"].startswith(("/run/secrets/", "/etc/gateway/secrets/"))
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump({**settings, "admin": {**settings["admin"], "token_file": str(token_file)}}))
    return load_config(copy, environ=environ)


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions (continuation lines joined) by stage name, in order."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := re.match(r"FROM \S+ AS (\w+)$", line):
            current = stages.setdefault(match[1], [])
        current.append(line)
    return stages


# -- docker compose ------------------------------------------------------------------------------


def test_the_compose_file_has_two_replicas_and_what_they_share() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway-a", "gateway-b", "lb", "upstream", "postgres", "redis"}
    # The same gateway but for what only gateway-a has: the image's build, and its admin port on
    # the host's loopback.
    a = {k: v for k, v in services["gateway-a"].items() if k not in ("build", "ports")}
    assert a == services["gateway-b"]
    assert services["gateway-a"]["ports"] == ["127.0.0.1:8081:8081"]


def test_the_gateway_image_is_built_once_and_the_stub_from_its_own_target() -> None:
    services = compose()["services"]
    builds = {name: service["build"] for name, service in services.items() if "build" in service}
    assert {name: build["target"] for name, build in builds.items()} == {"gateway-a": "gateway", "upstream": "stub"}
    assert all(build["context"] == ".." and build["dockerfile"] == "Dockerfile" for build in builds.values())
    # gateway-b runs the image gateway-a builds (compose builds it before starting either).
    assert services["gateway-b"]["image"] == services["gateway-a"]["image"] != services["upstream"]["image"]
    assert services["upstream"]["command"][0] == "upstream-stub"


def test_each_replica_loads_its_config_and_may_run_workers(tmp_path: Path) -> None:
    gateway = compose()["services"]["gateway-a"]
    environment = gateway["environment"]
    assert set(environment) <= set(ENV_OVERRIDES) | {"GATEWAY_CONFIG", "GATEWAY_ADMIN_TOKEN"}
    [mount] = gateway["volumes"]
    source, target, _ = mount.split(":")
    assert target == environment["GATEWAY_CONFIG"]
    config = load_with_token(DEPLOY / source, environment, tmp_path)
    assert config.store.url.startswith("postgresql://") and config.redis.url is not None
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8080)
    # --workers above 1 is allowed only with redis.url, which is set.
    assert gateway["command"][:2] == ["gateway", "serve"] and "--workers" in gateway["command"]
    # The upstream, the store and Redis it names are services of the file, on their ports.
    services = compose()["services"]
    assert config.upstream.url == "http://upstream:9000" and "9000" in services["upstream"]["command"]
    assert "@postgres:5432/" in config.store.url and config.redis.url.startswith("redis://redis:6379/")
    assert set(gateway["depends_on"]) == {"postgres", "redis", "upstream"}


def test_the_admin_token_comes_from_a_compose_secret_so_metrics_and_readyz_work(tmp_path: Path) -> None:
    document = compose()
    assert document["secrets"] == {"admin-token": {"file": "./secrets/admin-token"}}
    gateway = document["services"]["gateway-a"]
    assert gateway["secrets"] == ["admin-token"] and "GATEWAY_ADMIN_TOKEN" not in gateway["environment"]
    settings = yaml.safe_load((DEPLOY / "gateway.yaml").read_text())
    assert settings["admin"]["token_file"] == "/run/secrets/admin-token"  # where compose mounts it
    config = load_with_token(DEPLOY / "gateway.yaml", gateway["environment"], tmp_path)
    # The admin listener is on (a token), on the compose network, on the port published and probed.
    assert config.admin_tokens() == (("admin", TOKEN),)
    assert (config.admin.host, config.admin.port) == ("0.0.0.0", 8081)
    # The token file never enters git or the image's build context.
    assert (DEPLOY / ".gitignore").read_text().split() == ["/secrets/"]
    assert not any(line.startswith("!deploy") for line in (REPO / ".dockerignore").read_text().splitlines())


def test_the_stop_grace_covers_the_shutdown_timeout(tmp_path: Path) -> None:
    gateway = compose()["services"]["gateway-a"]
    config = load_with_token(DEPLOY / "gateway.yaml", gateway["environment"], tmp_path)
    assert parse_duration(gateway["stop_grace_period"]) >= config.listen.shutdown_timeout + EXIT_MARGIN


def test_the_health_check_is_readyz_on_the_admin_listener() -> None:
    check = compose()["services"]["gateway-a"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    assert "'http://127.0.0.1:8081/readyz'" in check["test"][3]
    # The same check as the image's own.
    [healthcheck] = [line for line in dockerfile_stages()["gateway"] if line.startswith("HEALTHCHECK")]
    assert check["test"][3] in healthcheck
    # nginx sends traffic once both replicas are ready.
    depends = compose()["services"]["lb"]["depends_on"]
    assert depends == {name: {"condition": "service_healthy"} for name in ("gateway-a", "gateway-b")}


def test_the_load_balancer_spreads_over_both_replicas() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"server (gateway-[ab]):(\d+);", conf) == [("gateway-a", "8080"), ("gateway-b", "8080")]
    [mount] = compose()["services"]["lb"]["volumes"]
    assert mount.startswith("./nginx.conf:")


# -- the Dockerfile and the packages --------------------------------------------------------------


def test_each_image_installs_the_extras_its_config_uses_at_the_locked_versions() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile and 'pip install -c constraints.txt ".${EXTRAS}"' in dockerfile
    assert "pip install -c constraints.txt ./stub" in dockerfile
    extras = compose()["services"]["gateway-a"]["build"]["args"]["EXTRAS"]
    # The replicas' config uses a PostgreSQL store and Redis (checked above).
    assert set(extras.strip("[]").split(",")) == {"postgres", "redis"}


def test_the_gateway_image_holds_no_upstream_stub() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["base", "stub", "gateway"]  # the gateway last: the default target
    assert stages["stub"][0].startswith("FROM base ") and stages["gateway"][0].startswith("FROM base ")
    copied = [line for line in stages["base"] + stages["gateway"] if line.startswith("COPY")]
    assert copied == [
        "COPY constraints.txt ./",
        "COPY pyproject.toml README.md ./",
        "COPY gateway ./gateway",
        "COPY config.yaml /etc/gateway/config.yaml",
    ]
    # What `pip install .` puts in the image: the gateway package and command alone.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["gateway"]
    assert project["project"]["scripts"] == {"gateway": "gateway.cli:main"}
    # The stub is its own distribution, with its command, built from ../upstream_stub.
    stub = tomllib.loads((REPO / "stub" / "pyproject.toml").read_text())
    assert stub["project"]["scripts"] == {"upstream-stub": "upstream_stub.__main__:main"}
    assert stub["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"] == {"../upstream_stub": "upstream_stub"}
    # Its dependencies are the gateway's too, so the locked versions cover it.
    gateway_requirements = {Requirement(r).name: Requirement(r) for r in project["project"]["dependencies"]}
    for text in stub["project"]["dependencies"]:
        requirement = Requirement(text)
        assert gateway_requirements[requirement.name].specifier == requirement.specifier


def test_the_image_keeps_its_store_in_the_data_volume_by_the_default_url() -> None:
    gateway = dockerfile_stages()["gateway"]
    assert load_config(None, environ={}).store.url == "sqlite:///./gateway.db"
    assert [line for line in gateway if line.startswith("WORKDIR")][-1] == "WORKDIR /data"
    assert 'VOLUME ["/data"]' in gateway
    # No store URL of the image's own beside the one a deployment sets (deploy/kubernetes/).
    assert not any("STORE" in line for line in gateway if line.startswith("ENV"))


def test_the_image_stops_gracefully_and_checks_readyz() -> None:
    gateway = dockerfile_stages()["gateway"]
    assert "STOPSIGNAL SIGTERM" in gateway
    [healthcheck] = [line for line in gateway if line.startswith("HEALTHCHECK")]
    default = load_config(REPO / "config.yaml", environ={})
    assert f"'http://127.0.0.1:{default.admin.port}/readyz'" in healthcheck
    # An image cannot set its stop timeout: the Dockerfile and the README say what to run it with.
    for document in ((REPO / "Dockerfile").read_text(), (REPO / "README.md").read_text()):
        [timeout] = {int(seconds) for seconds in re.findall(r"docker run --stop-timeout (\d+)", document)}
        assert timeout >= default.listen.shutdown_timeout + EXIT_MARGIN


# -- Kubernetes -----------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest in deploy/kubernetes/, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found
            found[document["kind"]] = document
    return found


def test_the_kubernetes_example_has_its_four_manifests() -> None:
    assert set(manifests()) == {"Deployment", "Service", "Secret", "ConfigMap"}


@pytest.mark.parametrize("kind", ["Deployment", "Service", "Secret", "ConfigMap"])
def test_each_kubernetes_manifest_validates_against_the_api_schema(kind: str) -> None:
    # strict: a misspelt or misplaced field is an error too, not ignored.
    kubernetes_validate.validate(manifests()[kind], KUBERNETES_VERSION, strict=True)


def test_the_schema_validation_catches_a_misplaced_field() -> None:
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["path"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="'path' was unexpected"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod()["containers"]
    assert isinstance(only, dict)
    return only


def kubernetes_config(tmp_path: Path) -> GatewayConfig:
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(manifests()["ConfigMap"]["data"]["gateway.yaml"])
    return load_with_token(config_file, {}, tmp_path)


def test_the_probes_are_readyz_and_healthz_on_the_admin_port(tmp_path: Path) -> None:
    config = kubernetes_config(tmp_path)
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {"http": config.listen.port, "admin": config.admin.port}
    assert config.admin.host == "0.0.0.0"  # the kubelet probes the pod's address
    assert container()["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container()["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_the_termination_grace_covers_the_pre_stop_pause_and_the_shutdown_timeout(tmp_path: Path) -> None:
    config = kubernetes_config(tmp_path)
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod()["terminationGracePeriodSeconds"]
    assert grace >= float(command[1]) + config.listen.shutdown_timeout + EXIT_MARGIN


def test_the_admin_token_is_a_file_from_the_secret(tmp_path: Path) -> None:
    config = kubernetes_config(tmp_path)
    assert config.admin_tokens() == (("admin", TOKEN),)
    secret = manifests()["Secret"]
    settings = yaml.safe_load(manifests()["ConfigMap"]["data"]["gateway.yaml"])
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == "admin-token"]
    [volume] = [v for v in pod()["volumes"] if v["name"] == "admin-token"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    [item] = volume["secret"]["items"]
    assert settings["admin"]["token_file"] == f"{mount['mountPath']}/{item['path']}"
    assert item["key"] in secret["stringData"]


def test_the_store_and_redis_urls_come_from_the_secret_by_the_environment_rule() -> None:
    secret = manifests()["Secret"]
    environment = {variable["name"]: variable for variable in container()["env"]}
    defaults = load_config(None, environ={})
    from_secret = {}
    for name, variable in environment.items():
        if "valueFrom" not in variable:
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"] and reference["key"] in secret["stringData"]
        # GATEWAY_<SECTION>__<KEY>: the config key section.key.
        match = re.fullmatch(r"GATEWAY_([A-Z_]+?)__([A-Z_]+)", name)
        assert match, name
        section, key = match[1].lower(), match[2].lower()
        assert hasattr(getattr(defaults, section), key)
        from_secret[f"{section}.{key}"] = secret["stringData"][reference["key"]]
    assert set(from_secret) == {"store.url", "redis.url"}
    assert from_secret["store.url"].startswith("postgresql://") and from_secret["redis.url"].startswith("redis://")
    # The config file is the ConfigMap's, mounted where GATEWAY_CONFIG says.
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == "config"]
    assert environment["GATEWAY_CONFIG"]["value"] == mount["mountPath"] and mount["subPath"] == "gateway.yaml"


def test_the_service_reaches_the_deployments_pods_on_their_named_ports() -> None:
    deployment, service = manifests()["Deployment"], manifests()["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {port["name"] for port in container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == names


# -- the locked versions --------------------------------------------------------------------------


def test_every_dependency_is_installed_at_its_locked_version() -> None:
    # scripts/test installs from constraints.txt: a dependency added or moved without running
    # scripts/lock shows here, before a fresh machine gets other versions than these tests did.
    locked = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
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

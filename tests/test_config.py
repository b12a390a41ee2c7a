from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main
from gateway.config import _SCALARS, ConfigError, GatewayConfig, load_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, settings: object) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(settings if isinstance(settings, str) else yaml.safe_dump(settings))
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == GatewayConfig()
    assert config.source == "defaults"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8080)
    assert config.upstream.url == "http://127.0.0.1:9000"
    assert config.upstream.preserve_host is False
    assert config.limits.max_body_bytes == 10 * 1024 * 1024
    assert config.error_profile.name == "mockly"
    assert config.proxy.trusted_peers == ()


def test_limits_are_separated_by_commas_or_semicolons_alike(tmp_path: Path) -> None:
    path = write(tmp_path, {"rate_limits": {"default": ["5/second,100/hour"], "per_user": "50/second; 1000/hour"}})
    config = load_config(path, environ={})
    assert [str(item) for item in config.rate_limits.default] == ["5 per 1 second", "100 per 1 hour"]
    assert [str(item) for item in config.rate_limits.per_user] == ["50 per 1 second", "1000 per 1 hour"]


def test_a_builtin_profile_brings_its_key_prefix_unless_keys_prefix_is_set(tmp_path: Path) -> None:
    mockupanda = load_config(write(tmp_path, {"errors": {"profile": "mockupanda"}}), environ={})
    assert (mockupanda.keys.prefix, mockupanda.keys.earlier_prefixes) == ("mpa_", ("mk_live_",))
    chosen = load_config(
        write(tmp_path, {"errors": {"profile": "mockupanda"}, "keys": {"prefix": "shop_"}}), environ={}
    )
    assert (chosen.keys.prefix, chosen.keys.earlier_prefixes) == ("shop_", ())
    mockly = load_config(write(tmp_path, {"errors": {"profile": "mockly"}}), environ={})
    assert (mockly.keys.prefix, mockly.keys.earlier_prefixes) == ("mk_live_", ())


@pytest.mark.parametrize(
    ("url", "origin", "base_path"),
    [
        ("http://api.internal:9000", "http://api.internal:9000", ""),
        ("http://api.internal:9000/v2/", "http://api.internal:9000", "/v2"),
        ("https://api.example.com/mockups/v%201", "https://api.example.com", "/mockups/v%201"),
    ],
)
def test_upstream_url_may_carry_a_base_path(tmp_path: Path, url: str, origin: str, base_path: str) -> None:
    upstream = load_config(write(tmp_path, {"upstream": {"url": url}}), environ={}).upstream
    assert (upstream.origin, upstream.base_path) == (origin, base_path)


@pytest.mark.parametrize("url", ["http://a/../x", "http://a/v2/..", "http://a/a b", "http://a/v2?x=1", "http://a/#f"])
def test_a_base_path_with_dot_segments_a_query_or_spaces_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="upstream.url: expected an http:// or https:// URL"):
        load_config(write(tmp_path, {"upstream": {"url": url}}), environ={})


def test_named_admin_tokens(tmp_path: Path) -> None:
    (tmp_path / "ops").write_text("ops-token-0123456789\n")
    (tmp_path / "short").write_text("short")
    named = {"admin": {"tokens": [{"name": "ops", "token_file": str(tmp_path / "ops")}]}}
    config = load_config(write(tmp_path, named), environ={"GATEWAY_ADMIN_TOKEN": "the-unnamed-one-0123"})
    assert config.admin_tokens() == (("admin", "the-unnamed-one-0123"), ("ops", "ops-token-0123456789"))
    assert "ops-token" not in repr(config)
    for tokens, message in (
        (
            [{"name": "ops", "token_file": str(tmp_path / "short")}],
            "admin.tokens (ops): expected at least 16 characters, printable",
        ),
        (
            [{"name": "admin", "token_file": str(tmp_path / "ops")}],
            "admin.tokens: expected a list of {name, token_file}",
        ),
        ([{"name": "ops", "token_file": str(tmp_path / "ops")}] * 2, "each name once"),
        ([{"name": "ops", "token_file": str(tmp_path / "none")}], "admin.tokens (ops): cannot read"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(write(tmp_path, {"admin": {"tokens": tokens}}), environ={})


def test_admin_tokens_are_usable_and_each_its_own(tmp_path: Path) -> None:
    (tmp_path / "ops").write_text("OPS-TOKEN-0123456789abcdef")
    (tmp_path / "binary").write_bytes(b"\xff" * 20)
    named = {"admin": {"tokens": [{"name": "ops", "token_file": str(tmp_path / "ops")}]}}
    with pytest.raises(ConfigError, match="the same token as another"):  # the variable is trimmed as files are
        load_config(write(tmp_path, named), environ={"GATEWAY_ADMIN_TOKEN": " OPS-TOKEN-0123456789abcdef\n"})
    for weak in ("a" * 16, "spaces in the token 1234", "short"):
        with pytest.raises(ConfigError, match="GATEWAY_ADMIN_TOKEN: admin token: expected at least 16 characters"):
            load_config(environ={"GATEWAY_ADMIN_TOKEN": weak})
    binary = {"admin": {"tokens": [{"name": "bin", "token_file": str(tmp_path / "binary")}]}}
    with pytest.raises(ConfigError, match=r"admin.tokens \(bin\): .* is not UTF-8 text"):
        load_config(write(tmp_path, binary), environ={})


def test_the_documented_config_yaml_is_the_defaults() -> None:
    """config.yaml in the repository documents every key with its default value."""
    documented = load_config(REPO / "config.yaml", environ={})
    assert documented == GatewayConfig(source=str(REPO / "config.yaml"))


def test_every_key_is_documented_in_config_yaml() -> None:
    from gateway.config import _SCALARS

    text = (REPO / "config.yaml").read_text()
    data = yaml.safe_load(text)
    documented = {f"{section}.{key}" for section, body in data.items() for key in (body or {})}
    assert set(_SCALARS) == documented
    assert "# profiles:" in text  # custom error profiles are described, commented out


def test_file_values_and_units(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "listen": {"host": "0.0.0.0", "port": 9999},
            "upstream": {"url": "https://api.example.test/", "connect_timeout": "500ms", "read_timeout": "2m"},
            "limits": {"max_body_bytes": "1MiB"},
            "proxy": {"trusted_peers": ["10.0.0.0/8", "192.168.1.7"]},
            "errors": {"profile": "mockupanda"},
        },
    )
    config = load_config(path, environ={})
    assert config.source == str(path)
    assert config.listen.port == 9999
    assert config.upstream.url == "https://api.example.test"
    assert (config.upstream.connect_timeout, config.upstream.read_timeout) == (0.5, 120.0)
    assert config.limits.max_body_bytes == 1024 * 1024
    assert config.proxy.trusted_peers == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.7/32"))
    assert config.error_profile.name == "mockupanda"


def test_file_from_environment_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = write(tmp_path, {"listen": {"port": 1111}})
    assert load_config(environ={"GATEWAY_CONFIG": str(named)}).listen.port == 1111
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("listen:\n  port: 2222\n")
    assert load_config(environ={}).listen.port == 2222
    assert load_config(named, environ={}).listen.port == 1111


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, {"upstream": {"url": "http://file.example:1"}})
    config = load_config(
        path,
        environ={
            "GATEWAY_UPSTREAM_URL": "http://env.example:2",
            "GATEWAY_STORE_URL": "sqlite:////var/lib/gateway/keys.db",
            "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
            "GATEWAY_ADMIN_TOKEN": "s3cret-admin-token",
        },
    )
    assert config.upstream.url == "http://env.example:2"
    assert config.store.url == "sqlite:////var/lib/gateway/keys.db"
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.admin_token == "s3cret-admin-token"
    assert "s3cret" not in repr(config)


def test_custom_profile_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "errors": {
                "profile": "acme",
                "profiles": {
                    "acme": {
                        "envelope": {"message": "{message}", "type": "{code}"},
                        "situations": {"upstream_unavailable": {"code": "down"}},
                    }
                },
            }
        },
    )
    profile = load_config(path, environ={}).error_profile
    assert profile.name == "acme"
    assert profile.situations["upstream_unavailable"].code == "down"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"listen": {"prot": 1}},
            "listen.prot: unknown key (known: listen.host, listen.port, listen.shutdown_timeout)",
            id="unknown-key",
        ),
        pytest.param({"upstreams": {}}, "upstreams: unknown section", id="unknown-section"),
        pytest.param(
            {"listen": {"port": "eighty"}},
            "listen.port: expected a port number from 0 to 65535, got 'eighty'",
            id="wrong-type",
        ),
        pytest.param({"listen": {"port": 70000}}, "listen.port: expected a port number", id="out-of-range"),
        pytest.param(
            {"upstream": {"url": "ftp://x"}}, "upstream.url: expected an http:// or https:// URL", id="bad-scheme"
        ),
        pytest.param(
            {"upstream": {"url": "http://x/api/../v1"}},
            "upstream.url: expected an http:// or https:// URL",
            id="url-with-a-dot-segment",
        ),
        pytest.param(
            {"upstream": {"read_timeout": "soon"}}, "upstream.read_timeout: expected a duration", id="bad-duration"
        ),
        pytest.param(
            {"upstream": {"read_timeout": 0}},
            "upstream.read_timeout: expected a duration above zero",
            id="zero-timeout",
        ),
        pytest.param(
            {"upstream": {"max_connections": 0}}, "upstream.max_connections: expected a whole number", id="zero-pool"
        ),
        pytest.param(
            {"upstream": {"preserve_host": "yes"}},
            "upstream.preserve_host: expected true or false",
            id="bool-as-string",
        ),
        pytest.param(
            {"upstream": {"client": "requests"}}, "upstream.client: expected one of aiohttp, httpx", id="bad-client"
        ),
        pytest.param({"limits": {"max_body_bytes": "huge"}}, "limits.max_body_bytes: expected a size", id="bad-size"),
        pytest.param(
            {"rate_limits": {"routes": [{"method": "POST", "path": "/x"}]}},
            "rate_limits.routes: expected a list of {method, path, per_key?, per_user?, mode?}",
            id="route-without-limits",
        ),
        pytest.param(
            {"rate_limits": {"routes": [{"method": "POST", "path": "/x", "per_key": ["1/minute"], "mode": "try"}]}},
            "rate_limits.routes: expected a list of {method, path",
            id="route-bad-mode",
        ),
        pytest.param(
            {"rate_limits": {"observe": ["everything"]}},
            "rate_limits.observe: expected a list of the limits",
            id="observe",
        ),
        pytest.param(
            {"rate_limits": {"per_user": ["lots"]}}, "rate_limits.per_user: expected a list of limits", id="per-user"
        ),
        pytest.param(
            {"credits": {"refill": {"amount": 1000, "every": "week"}}},
            "credits.refill: expected {amount, every}",
            id="refill-every-week",
        ),
        pytest.param(
            {"proxy": {"trusted_peers": ["not-an-ip"]}}, "proxy.trusted_peers: expected a list of IP", id="bad-peer"
        ),
        pytest.param({"store": {"url": "mysql://x"}}, "store.url: expected sqlite:///relative/path.db", id="bad-store"),
        pytest.param(
            {"errors": {"profile": "nope"}}, "errors.profile: expected one of mockly, mockupanda", id="bad-profile"
        ),
        pytest.param(
            {"errors": {"profiles": {"acme": {"situations": {"upstream_timeout": {"status": 200}}}}}},
            "errors.profiles.acme.situations.upstream_timeout.status: expected an HTTP error status",
            id="bad-custom-profile",
        ),
        pytest.param({"listen": [1, 2]}, "listen: expected a mapping", id="section-not-mapping"),
        pytest.param("listen: {port: [}\n", "not valid YAML at line 1", id="bad-yaml"),
        pytest.param("- just\n- a list\n", "expected a mapping of sections", id="top-level-list"),
    ],
)
def test_invalid_settings_name_file_and_key(tmp_path: Path, settings: object, message: str) -> None:
    path = write(tmp_path, settings)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^environment variable GATEWAY_UPSTREAM_URL: upstream.url: expected"):
        load_config(environ={"GATEWAY_UPSTREAM_URL": "not a url", "GATEWAY_CONFIG": ""})


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml", environ={})


# ------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_config_error_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    path = write(tmp_path, {"upstream": {"url": "nope"}})
    args = ["--config", str(path), "serve"] if where == "before" else ["serve", "--config", str(path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{path}: upstream.url: expected an http:// or https:// URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_reads_gateway_config_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, {"listen": {"port": "x"}})
    result = CliRunner().invoke(main, ["serve"], env={"GATEWAY_CONFIG": str(path)})
    assert result.exit_code == 2
    assert f"{path}: listen.port" in result.stderr


def test_the_commented_profile_example_in_config_yaml_is_valid() -> None:
    text = (REPO / "config.yaml").read_text()
    example = text[text.index("  # profiles:") :]
    uncommented = "\n".join(line.replace("  # ", "  ", 1)[2:] for line in example.splitlines())
    definitions = yaml.safe_load(uncommented)["profiles"]
    from gateway.profiles import build_profile

    profile = build_profile("acme", definitions["acme"])
    assert profile.situations["rate_limited"].code == "TOO_MANY"


@pytest.mark.parametrize(
    ("settings", "module", "key", "extra", "variable"),
    [
        ({"store": {"url": "postgresql://db/gateway"}}, "asyncpg", "store.url", "postgres", "GATEWAY_STORE_URL"),
        ({"redis": {"url": "redis://127.0.0.1:6379/0"}}, "redis", "redis.url", "redis", "GATEWAY_REDIS_URL"),
        ({"upstream": {"client": "httpx"}}, "httpx", "upstream.client", "httpx", None),
    ],
)
def test_a_backend_whose_extra_is_not_installed_is_named_with_the_install_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict,
    module: str,
    key: str,
    extra: str,
    variable: str | None,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    message = str(raised.value)
    assert message.startswith(f"{path}: {key}: ") and f"pip install 'api-key-gateway[{extra}]'" in message
    if variable is not None:
        empty = tmp_path / "empty.yaml"
        empty.write_text("")
        with pytest.raises(ConfigError, match=f"^environment variable {variable}: {key}: "):
            load_config(empty, environ={variable: settings[key.split(".")[0]]["url"]})
        # The environment may choose another backend than the file did: what counts is the result.
        load_config(path, environ={variable: f"sqlite:///{tmp_path}/x.db" if key == "store.url" else ""})
    monkeypatch.delitem(sys.modules, module)
    load_config(path, environ={})  # installed: accepted


# ------------------------------------------------------------------------- the environment rule


def test_a_scalar_from_the_environment_as_the_file_spells_it() -> None:
    config = load_config(
        environ={
            "GATEWAY_LISTEN__PORT": "8081",
            "GATEWAY_UPSTREAM__PRESERVE_HOST": "true",
            "GATEWAY_LISTEN__HOST": "::",
        }
    )
    assert (config.listen.port, config.upstream.preserve_host, config.listen.host) == (8081, True, "::")
    assert load_config(environ={"GATEWAY_REDIS__URL": "null"}).redis.url is None


def test_a_duration_and_a_size_from_the_environment() -> None:
    config = load_config(environ={"GATEWAY_UPSTREAM__READ_TIMEOUT": "5s", "GATEWAY_LIMITS__MAX_BODY_BYTES": "1MiB"})
    assert (config.upstream.read_timeout, config.limits.max_body_bytes) == (5.0, 1024 * 1024)


def test_lists_and_nested_objects_from_the_environment_as_json(tmp_path: Path) -> None:
    (tmp_path / "ops").write_text("ops-token-0123456789")
    config = load_config(
        environ={
            "GATEWAY_RATE_LIMITS__DEFAULT": '["5/second", "100/hour"]',
            "GATEWAY_PROXY__TRUSTED_PEERS": '["10.0.0.0/8"]',
            "GATEWAY_ADMIN__TOKENS": json.dumps([{"name": "ops", "token_file": str(tmp_path / "ops")}]),
            "GATEWAY_RATE_LIMITS__ROUTES": '[{"method": "post", "path": "/x", "per_key": ["1/minute"]}]',
            "GATEWAY_CREDITS__REFILL": '{"amount": 10, "every": "day"}',
            "GATEWAY_ERRORS__PROFILE": "acme",
            "GATEWAY_ERRORS__PROFILES": '{"acme": {"situations": {"upstream_unavailable": {"code": "down"}}}}',
        }
    )
    assert [str(item) for item in config.rate_limits.default] == ["5 per 1 second", "100 per 1 hour"]
    assert config.proxy.trusted_peers == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.admin_tokens() == (("ops", "ops-token-0123456789"),)
    assert [(route.name, route.mode) for route in config.rate_limits.routes] == [("POST /x", "enforce")]
    assert config.credits.refill is not None and config.credits.refill.amount == 10
    assert config.error_profile.situations["upstream_unavailable"].code == "down"


def test_every_documented_key_comes_from_the_environment_by_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.yaml's every value, given as variables instead (lists and mappings as JSON, scalars
    as YAML spells them), makes the same settings."""
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    documented = yaml.safe_load((REPO / "config.yaml").read_text())
    environ = {}
    for section, body in documented.items():
        for name, value in body.items():
            variable = "GATEWAY_" + f"{section}__{name}".upper()
            environ[variable] = json.dumps(value) if isinstance(value, list | dict | bool | None) else str(value)
    assert len(environ) == len(_SCALARS)
    assert load_config(environ=environ) == GatewayConfig()


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"listen": {"port": 1111, "host": "0.0.0.0"}, "errors": {"profile": "mockly"}})
    config = load_config(path, environ={"GATEWAY_LISTEN__PORT": "2222", "GATEWAY_ERRORS__PROFILE": "mockupanda"})
    assert (config.listen.port, config.listen.host, config.error_profile.name) == (2222, "0.0.0.0", "mockupanda")
    assert config.keys.prefix == "mpa_"  # the profile chosen in the environment brings its prefix too


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        pytest.param(
            "GATEWAY_LISTEN_PORT",
            "environment variable GATEWAY_LISTEN_PORT is no config key:"
            " did you mean GATEWAY_LISTEN__PORT (listen.port)?",
            id="one-underscore",
        ),
        pytest.param(
            "GATEWAY_RATE_LIMITS_DEFAULT",
            "did you mean GATEWAY_RATE_LIMITS__DEFAULT (rate_limits.default)?",
            id="underscores-in-the-section",
        ),
        pytest.param(
            "GATEWAY_UPSTREAM__READ_TIMOUT",
            "did you mean GATEWAY_UPSTREAM__READ_TIMEOUT (upstream.read_timeout)?",
            id="misspelt",
        ),
        pytest.param("GATEWAY_CONFIG_FILE", "did you mean GATEWAY_CONFIG (the config file's path)?", id="special"),
        pytest.param("GATEWAY_listen__port", "did you mean GATEWAY_LISTEN__PORT (listen.port)?", id="lower-case"),
    ],
)
def test_an_unknown_variable_is_an_error_naming_the_nearest_key(variable: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: "1"})
    assert str(caught.value).endswith(message) and str(caught.value).startswith(f"environment variable {variable} ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GATEWAY_LISTEN__PORT", "eighty", "listen.port: expected a port number from 0 to 65535, got 'eighty'"),
        ("GATEWAY_UPSTREAM__READ_TIMEOUT", "soon", "upstream.read_timeout: expected a duration"),
        ("GATEWAY_UPSTREAM__PRESERVE_HOST", "maybe", "upstream.preserve_host: expected true or false, got 'maybe'"),
        ("GATEWAY_RATE_LIMITS__DEFAULT", '["5/second",', "rate_limits.default: expected a list or a mapping in JSON"),
        ("GATEWAY_ADMIN__TOKENS", '[{"name": "ops"}]', "admin.tokens: expected a list of {name, token_file}"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_key(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: value})
    assert str(caught.value).startswith(f"environment variable {variable}: {message}")
    assert "\n" not in str(caught.value)


def test_the_special_variables_are_no_config_keys_and_not_flagged(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    config = load_config(
        environ={
            "GATEWAY_CONFIG": str(path),
            "GATEWAY_ADMIN_TOKEN": "the-unnamed-one-0123",
            "GATEWAY_REQUIRE_SERVICES": "1",
            "GATEWAY_UPSTREAM_URL": "http://env.example:2",
            "GATEWAY_STORE_URL": "sqlite:///x.db",
            "GATEWAY_REDIS_URL": "",
            "OTHER_LISTEN_PORT": "not ours",
        }
    )
    assert (config.source, config.upstream.url, config.store.url) == (
        str(path),
        "http://env.example:2",
        "sqlite:///x.db",
    )
    assert config.admin_token == "the-unnamed-one-0123"


def test_an_older_name_and_the_rule_s_name_for_one_key_are_not_both_taken() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_UPSTREAM_URL: upstream.url is set by GATEWAY_UPSTREAM__URL too"):
        load_config(environ={"GATEWAY_UPSTREAM_URL": "http://a:1", "GATEWAY_UPSTREAM__URL": "http://b:1"})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"listen": {"port": "x", "prot": 1}, "upstream": {"url": "ftp://x"}})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"GATEWAY_LISTEN_PORT": "1", "GATEWAY_CACHE__MAX_ENTRIES": "0"})
    assert [line.split(": ")[0:2] for line in caught.value.problems] == [
        [str(path), "listen.port"],
        [str(path), "listen.prot"],
        [str(path), "upstream.url"],
        [
            "environment variable GATEWAY_LISTEN_PORT is no config key",
            "did you mean GATEWAY_LISTEN__PORT (listen.port)?",
        ],
        ["environment variable GATEWAY_CACHE__MAX_ENTRIES", "cache.max_entries"],
    ]
    result = CliRunner().invoke(main, ["serve", "--config", str(path)], env={"GATEWAY_LISTEN_PORT": "1"})
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and all(line.startswith("Error: ") for line in lines)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GATEWAY_STORE__URL", "mysql://u:S3cretPW@db/x", "store.url: expected"),
        ("GATEWAY_STORE__URL", '{"a": "S3cretPW"', "store.url: expected"),
        ("GATEWAY_REDIS__URL", "redis://:S3cretPW@h:99999/0", "redis.url: expected a redis://host:port/db URL"),
        ("GATEWAY_ERRORS__PROFILES", '{"x": {"base": {"a": 1}}}', "errors.profiles.x.base: expected one of"),
        ("GATEWAY_LIMITS__HEAD_TIMEOUT", ".nan", "limits.head_timeout: expected a duration of at most 100 years"),
        ("GATEWAY_CACHE__TTL_SECONDS", ".inf", "cache.ttl_seconds: expected a duration of at most 100 years"),
        ("GATEWAY_LIMITS__MAX_BODY_BYTES", "1" + "0" * 38, "limits.max_body_bytes: expected a size of at most"),
    ],
)
def test_a_bad_value_is_one_line_that_shows_no_password(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, environ={variable: value})
    assert message in str(refused.value) and "S3cretPW" not in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("variable", ["gateway_listen__port", "Gateway_LISTEN__PORT"])
def test_a_variable_in_other_letter_cases_is_a_slip_named_as_such(variable: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable} is no config key: did you mean GATEWAY_LISTEN__PORT"):
        load_config(None, environ={variable: "8081"})

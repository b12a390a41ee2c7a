"""What every ``gateway`` subcommand shares: ``--config``, ``--json``, errors and output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from gateway.config import ConfigError, GatewayConfig, load_config

__all__ = [
    "ConfigProblem",
    "OneLineErrors",
    "config_option",
    "emit",
    "fields",
    "json_option",
    "load",
    "shown",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])
_CONFIG_KEY = "gateway.config_path"


class OneLineErrors(click.Group):
    """A command group whose every error is one line on stderr: what is wrong and what to do.

    Click's own usage errors come with a usage block and a blank line; an operator's script
    reading stderr wants one line, so they are reduced to their message and a pointer to --help.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A group named without a subcommand: the help is the answer.
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class ConfigProblem(click.ClickException):
    """The configuration cannot be used (exit status 2, like a usage error)."""

    exit_code = 2


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta[_CONFIG_KEY] = value


def config_option(f: F) -> F:
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="YAML config file (default: $GATEWAY_CONFIG, else ./config.yaml if present, else built-in defaults).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")(f)


def load(ctx: click.Context) -> GatewayConfig:
    try:
        return load_config(ctx.find_root().meta.get(_CONFIG_KEY))
    except ConfigError as exc:
        # Every problem found, each on its own "Error:" line.
        raise ConfigProblem("\nError: ".join(exc.problems)) from None


def shown(value: Any) -> str:
    """A value as people read it: '-' for none, yes/no, a list joined by ';' (as limits are given),
    never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ";".join(shown(item) for item in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # metadata, an event's fields
    return str(value)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    widest: Mapping[str, int] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Rows as aligned text columns under a header; a column in ``widest`` is cut to that many
    characters (ending in '…'), so that a table fits a terminal whatever the names are."""
    widest = widest or {}
    headers = headers or {}

    def cell(row: Mapping[str, Any], column: str) -> str:
        text = shown(row.get(column))
        limit = widest.get(column)
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

    cells = [[cell(row, c) for c in columns] for row in rows]
    titles = [headers.get(c, c).upper() for c in columns]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields(document: Mapping[str, Any]) -> str:
    """One ``name: value`` line per field, values as people read them."""
    return "\n".join(f"{name}: {shown(value)}" for name, value in document.items())


def emit(as_json: bool, document: object, text: str) -> None:
    """Print ``document`` as JSON, or ``text`` for people."""
    click.echo(json.dumps(document, indent=2) if as_json else text)

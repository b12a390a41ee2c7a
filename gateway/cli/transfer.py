"""``gateway import`` and ``gateway export``: moving users and key hashes in and out as JSON Lines
(the format and the rules are in ``manage/transfer.py``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import IO

import click

from gateway.cli.common import config_option, emit, json_option, load
from gateway.cli.manage import run
from gateway.manage.service import ManagementService
from gateway.manage.transfer import ImportReport, decode_line, export_lines

__all__ = ["export_command", "import_command", "report_text"]


def report_text(report: ImportReport) -> str:
    verb = "would be" if report.dry_run else "were"
    lines = [f"line {line}: {message}" for line, message in report.errors]
    if report.error_count > len(report.errors):
        lines.append(f"... and {report.error_count - len(report.errors)} more")
    if report.error_count:
        return "\n".join(lines)
    counts = [
        f"{what}: {c.created} {verb} created, {c.updated} {verb} updated, {c.unchanged} unchanged"
        for what, c in (("users", report.users), ("keys", report.keys))
    ]
    prefix = "dry run, nothing written: " if report.dry_run else ""
    return "\n".join([f"warning: {w}" for w in report.warnings] + [prefix + "; ".join(counts)])


async def _lines(stream: IO[bytes]) -> AsyncIterator[str]:
    # Read as needed: the file is never held whole. A blocking read is fine in the CLI.
    for line in stream:
        yield decode_line(line)


@click.command("import")
@config_option
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change; write nothing.")
@json_option
@click.pass_context
def import_command(ctx: click.Context, file: IO[bytes], dry_run: bool, as_json: bool) -> None:
    """Import users and keys from JSON Lines (FILE, or - for stdin): all of it, or nothing."""
    config = load(ctx)
    prefixes = (config.keys.prefix, *config.keys.legacy_prefixes)

    async def action(service: ManagementService) -> ImportReport:
        return await service.import_lines(_lines(file), dry_run=dry_run, prefixes=prefixes)

    report = run(ctx, action)
    if report.error_count:
        if as_json:
            emit(True, report.document(), "")
        else:
            click.echo(report_text(report), err=True)
        raise click.ClickException(
            f"{report.error_count} bad lines; nothing was written: fix them and run the import again"
        )
    emit(as_json, report.document(), report_text(report))


@click.command("export")
@config_option
@json_option
@click.pass_context
def export_command(ctx: click.Context, as_json: bool) -> None:
    """Write every user and key (with its hash) and their usage as JSON Lines, for gateway import.

    The output holds key hashes: keep it as secret as the store. --json changes nothing (the
    output is JSON either way); a count goes to stderr."""

    async def action(service: ManagementService) -> tuple[int, int]:
        users = keys = 0
        async for line in export_lines(service.store):
            if line.startswith('{"type":"user"'):
                users += 1
            else:
                keys += 1
            sys.stdout.write(line)
        sys.stdout.flush()
        return users, keys

    users, keys = run(ctx, action)
    click.echo(f"exported {users} users and {keys} keys", err=True)

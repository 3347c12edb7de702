"""``ledger serve`` and ``ledger config check``: the long-running service and its config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ledger.durations import format_duration
from ledger.text import wrap_cells
from ledger.urls import mask_url
from service.cli.errors import EXIT_OK, BadInput, library_errors, remember_url_source
from service.cli.ledgers import note_created
from service.cli.options import FILE, CommandGroup, Integer
from service.config import (
    checked_config,
    load_config,
    metrics_port_problem,
    refuse_unwritable_anchor,
)
from service.serve import LedgerService, claim_ports

CHECK_WIDTH = 80  # `config check` prints for a terminal of 80 columns
CHECK_INDENT = "  "


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    type=FILE,
    default=Path("ledger.toml"),
    show_default=True,
    help="The TOML config file.",
)
@click.option(
    "--metrics-port",
    type=Integer(1, 65535),
    default=None,
    help="Serve Prometheus metrics on PORT (overrides serve.metrics_port; the address is "
    "serve.metrics_host, 127.0.0.1 by default).",
)
def serve_command(config_path: Path, metrics_port: int | None) -> None:
    """Run connectors on their schedules, the projector, the sweeper and spool flushing."""
    from migrations.runner import create_if_missing  # Alembic loads only where it may be needed

    source = click.get_current_context().get_parameter_source("config_path")
    if source is ParameterSource.DEFAULT and not config_path.exists():
        raise BadInput(
            f"no {config_path} in this folder: serve reads ./{config_path} unless given "
            "--config FILE (an example ships as examples/ledger.toml; `ledger config check "
            "FILE` validates one)"
        )
    with library_errors():
        config = load_config(config_path)
        # Before a database is made: what serve would fail on at once, or at every interval.
        refuse_unwritable_anchor(config_path, config)
    if metrics_port is not None:  # the file's own metrics_port was checked as it was read
        clash = metrics_port_problem(config.serve.metrics_host, metrics_port, config.api)
        if clash is not None:
            raise BadInput(f"--metrics-port {metrics_port}: [api] {clash}")
    remember_url_source(config.database_url)  # an error about it names $LEDGER_DATABASE_URL
    with library_errors():
        # Before a database is made or "serving" is said: a port taken is exit 2 and nothing
        # else (the API's socket is kept for the API).
        api_socket = claim_ports(config, metrics_port)
        note_created(create_if_missing(config.database_url))
        service = LedgerService(config, metrics_port, api_socket)
        service.refuse_what_waiting_would_not_fix()
    api = f", API on http://{config.api.listen}" if config.api.listen else ""
    click.echo(
        f"serving {mask_url(config.database_url)} with "
        f"{sum(c.enabled for c in config.connectors)} scheduled "
        f"connector(s){api}; SIGTERM or Ctrl-C to stop",
        err=True,
    )
    # APScheduler's own lines ("Added job", "Running job", ...) only at -vv: at -v they would
    # drown run-ledger's; the lines that matter it translates (see LedgerService).
    debugging = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if debugging else logging.WARNING)
    with library_errors():
        service.run(announce=announce_unless_logged)
    # Every run is closed and the projector's batch is committed; a connector thread still
    # blocked in I/O (its run already ended "shutdown") must not hold the exit hostage.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def announce_unless_logged(line: str) -> None:
    """The startup line on stderr, unless ``-v`` has logged it already."""
    if not logging.getLogger("service.serve").isEnabledFor(logging.INFO):
        click.echo(line, err=True)


@click.group("config", cls=CommandGroup)
def config_group() -> None:
    """The ledger serve configuration file."""


@config_group.command("check")
@click.argument("path", type=FILE)
def config_check(path: Path) -> None:
    """Validate a config file; exit 2 naming each bad key or missing input file."""
    with library_errors():
        config = checked_config(path)
    enabled = [c for c in config.connectors if c.enabled]
    # A line each, to fit 80 columns: the path and the URL are values not to be broken (a
    # longer one overflows its own line); the rest is wrapped with a hanging indent.
    click.echo(f"{path}: valid")
    click.echo(f"{CHECK_INDENT}database {mask_url(config.database_url)}")
    summary = (
        f"{CHECK_INDENT}{len(enabled)} connector(s) scheduled of {len(config.connectors)}; "
        f"stale after {format_duration(config.thresholds.stale_after)}; sweep every "
        f"{format_duration(config.sweeper.interval)}"
    )
    click.echo("\n".join(wrap_cells(summary, CHECK_WIDTH, CHECK_INDENT * 2)))
    for warning in config.serve_warnings():
        lines = wrap_cells(f"warning: {warning}", CHECK_WIDTH, CHECK_INDENT)
        click.echo("\n".join(lines), err=True)

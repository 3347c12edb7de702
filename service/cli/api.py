"""``ledger api``: the HTTP API on its own (for a deployment that projects elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ledger.urls import mask_url, resolve_database_url
from service.cli.errors import library_errors, remember_url_source
from service.cli.options import FILE, db_or_config_option

if TYPE_CHECKING:
    from service.config import LedgerConfig


@click.command("api")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default=None,
    help="Where to listen (else [api] listen of the config, else 127.0.0.1:8080).",
)
@click.option(
    "--config",
    "config_path",
    type=FILE,
    default=None,
    help="The TOML config: its [api] tokens and limits, thresholds, spool and database.",
)
@db_or_config_option
def api_command(listen: str | None, config_path: Path | None, db_url: str | None) -> None:
    """Serve the HTTP API until SIGTERM or Ctrl-C (requests in flight are finished)."""
    # uvicorn and FastAPI load only for this command
    from service.api.server import listen_address, serve_api, standalone_config

    remember_url_source(resolve_database_url(db_url))  # an error names $LEDGER_DATABASE_URL
    with library_errors():
        config = standalone_config(config_path, db_url)
    where = listen_address(listen, config)

    def announce() -> None:
        """Once the address is bound: a bad or taken one is the only thing said."""
        if not config.api.tokens:
            click.echo(f"warning: {no_tokens_warning(config)}", err=True)
        click.echo(
            f"API for {mask_url(config.database_url)} on http://{where}; SIGTERM or Ctrl-C to stop",
            err=True,
        )

    with library_errors():
        serve_api(config, where, announce)


def no_tokens_warning(config: LedgerConfig) -> str:
    """What an API without tokens refuses: every request but /healthz, except the web view's
    pages when ``[web] public_read`` lets anyone read them (the warning said those were refused
    too while they answered 200 to anyone who reached the port)."""
    if config.web.enabled and config.web.public_read:
        return (
            "no [api] tokens configured: every API request but /healthz is refused; the web "
            "view's pages are readable by anyone who reaches this port ([web] public_read), "
            "and no one can log in to fail a run"
        )
    return "no [api] tokens configured: every request but /healthz is refused"

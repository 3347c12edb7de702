"""``ledger api``: the HTTP API on its own (for a deployment that projects elsewhere)."""

from __future__ import annotations

from pathlib import Path

import click

from ledger.urls import mask_url, resolve_database_url
from service.cli.errors import library_errors, remember_url_source
from service.cli.options import FILE, db_or_config_option


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
            click.echo(
                "warning: no [api] tokens configured: every request but /healthz is refused",
                err=True,
            )
        click.echo(
            f"API for {mask_url(config.database_url)} on http://{where}; SIGTERM or Ctrl-C to stop",
            err=True,
        )

    with library_errors():
        serve_api(config, where, announce)

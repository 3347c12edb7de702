"""``ledger api``: the HTTP API on its own (for a deployment that projects elsewhere)."""

from __future__ import annotations

from pathlib import Path

import click

from ledger import Ledger
from ledger.urls import mask_url, resolve_database_url
from service.cli.common import FILE, db_option, library_errors
from service.config import LedgerConfig, load_config


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
@db_option
def api_command(listen: str | None, config_path: Path | None, db_url: str | None) -> None:
    """Serve the HTTP API until SIGTERM or Ctrl-C (requests in flight are finished)."""
    from service.api.server import serve_api  # uvicorn and FastAPI load only for this command

    with library_errors():
        config = load_config(config_path) if config_path else LedgerConfig()
        if db_url is not None or config_path is None:
            config = config.model_copy(
                update={"database_url": resolve_database_url(db_url or None)}
            )
        # The API appends but never creates a database: a typo in the URL is refused here, not
        # answered with an empty file and a schema that is never current.
        Ledger.from_url(config.database_url, create=False).close()
    where = listen or config.api.listen or "127.0.0.1:8080"
    if not config.api.tokens:
        click.echo(
            "warning: no [api] tokens configured: every request but /healthz is refused", err=True
        )
    click.echo(
        f"API for {mask_url(config.database_url)} on http://{where}; SIGTERM or Ctrl-C to stop",
        err=True,
    )
    with library_errors():
        serve_api(config, where)

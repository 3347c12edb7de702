"""The ``ledger`` console script: a Ctrl-C while the command is still loading is one line and
exit 130, as it is once the command runs.

Loading the command (click, SQLAlchemy, pydantic, FastAPI, Alembic) takes one to two seconds,
more on a busy machine. A Ctrl-C then (a wrong command noticed at once) raised
KeyboardInterrupt inside an import, outside every handler, and Python printed its traceback.
This module imports nothing at its top but the standard library, so the import of the command
runs inside the handler. A SIGTERM meanwhile is kept for the command
(:func:`service.stop_request.defer_termination`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

# service.cli.errors.EXIT_INTERRUPTED, not imported from there: that import is what can be cut.
EXIT_INTERRUPTED = 130


def main() -> NoReturn:
    try:
        from service.stop_request import defer_termination

        # A SIGTERM while the command loads is kept for it: the long-running commands stop
        # on it as on a later one, the others end at once, as before (see the function).
        defer_termination()
        from service.cli import main as run_command
    except KeyboardInterrupt:
        # The terminal echoed ^C: the message starts on a line of its own, as Interrupted's.
        sys.stderr.write("\nError: interrupted by Ctrl-C (SIGINT)\n")
        sys.exit(EXIT_INTERRUPTED)
    run_command()

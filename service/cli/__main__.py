"""``python -m service.cli``: the ``ledger`` command."""

from service.cli import main

main()

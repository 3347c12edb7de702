"""One append too large for a single round trip (MySQL/MariaDB send its statements one by one),
for the tests of a writer that vanishes between them.

usage: large_append_worker.py URL

Appends one RunStarted whose metadata carries 200,000 characters (over the 128,000 characters
of payload that travel with their COMMIT in one round trip). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys

from ledger import Ledger, RunStarted


def main() -> None:
    ledger = Ledger.from_url(sys.argv[1])
    try:
        event = RunStarted(source_id=99, connector_name="large", metadata={"note": "x" * 200_000})
        result = ledger.append([event])
        print(json.dumps({"appended": result.appended}))
    finally:
        ledger.close()


if __name__ == "__main__":
    main()

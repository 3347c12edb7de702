"""The performance harness: each figure of run-ledger beside the raw database limit measured in
the same run. ``python -m benchmarks --help``."""

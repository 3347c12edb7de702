"""Read models materialised from the ledger (the projector arrives with issue 3)."""

__all__: list[str] = []

"""Proof and audit over the ledger and its read model: verify (the hash chain, the stream
registry, the projection, operator skips, the immutability triggers, anchors kept outside the
database), run timelines, the proof report, and the import of legacy ``ingestion_runs`` rows."""

from forensics.anchors import Anchor, AnchorCheck, append_anchor, check_anchors, current_anchor
from forensics.audit import AuditPage, AuditState, TimelineEntry, audit_page, audit_run, iter_audit
from forensics.chain import ChainReport, verify_chain
from forensics.legacy_import import import_legacy
from forensics.report import build_report
from forensics.verify import VerifyReport, verify_all

__all__ = [
    "Anchor",
    "AnchorCheck",
    "AuditPage",
    "AuditState",
    "ChainReport",
    "TimelineEntry",
    "VerifyReport",
    "append_anchor",
    "audit_page",
    "audit_run",
    "build_report",
    "check_anchors",
    "current_anchor",
    "import_legacy",
    "iter_audit",
    "verify_all",
    "verify_chain",
]

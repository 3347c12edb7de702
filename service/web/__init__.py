"""The read-only web view (issue 17): pages for auditors and operators, mounted at ``/web`` of
the HTTP API when ``[web] enabled``."""

from service.web.app import ROOT, WebState, create_web_app

__all__ = ["ROOT", "WebState", "create_web_app"]

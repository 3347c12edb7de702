"""The read-only web view (issue 17): pages for auditors and operators, mounted at ``/web`` of
the HTTP API when ``[web] enabled``."""

from service.web.app import ROOT, SecurityHeaders, WebState, create_web_app

__all__ = ["ROOT", "SecurityHeaders", "WebState", "create_web_app"]

"""What the console middleware leaves on a request for the handlers."""

from __future__ import annotations

from tunevault.service.sessions import Session

SESSION = "tunevault.console.session"
COOKIE = "tv_session"
SIGN_IN_COOKIE = "tv_signin"  # the sign-in form's CSRF token (double submit): no session yet
PREFIX = "/console"

__all__ = ["COOKIE", "PREFIX", "SESSION", "SIGN_IN_COOKIE", "Session"]

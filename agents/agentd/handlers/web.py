"""What the handlers that make HTTP requests share."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Answer a redirect as it is (an ``HTTPError`` with its 3xx status) instead of following it:
    a request's headers, an auth header among them, must not travel wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener() -> urllib.request.OpenerDirector:
    """An opener that follows no redirect (proxies come from the environment, as usual)."""
    return urllib.request.build_opener(NoRedirects())


def failure_reason(error: BaseException) -> str:
    """A connection failure in a few words: "timed out", "Connection refused"..."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__

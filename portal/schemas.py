"""Schemas every app's API shares.

``Problem`` is the body of every refusal and error (``portal.api`` answers a ``Refused`` with it,
plus the refusal's details); apps list it in their endpoints' ``response`` for the OpenAPI
document.
"""

from __future__ import annotations

from ninja import Schema


class Problem(Schema):
    detail: str
    # Empty for Django's and ninja's own errors (404 for an unknown path, a malformed body).
    code: str = ""

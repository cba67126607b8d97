"""The help desk's refusal: what it will not do, with the sentence every door shows."""

from __future__ import annotations

from portal.refusals import Refused


class HelpdeskRefused(Refused):
    """Help desk work that will not be done: 400 ``invalid``, 403 ``forbidden``, 404
    ``not_found``, 409 ``conflict`` and ``off`` (a part not configured here, say Zendesk without
    ZENDESK_URL), 429 ``rate_limited``, 503 ``unavailable`` (a server that did not answer)."""

    default_code = "conflict"
    status_by_code = {
        **Refused.status_by_code,
        "invalid": 400,
        "forbidden": 403,
        "not_found": 404,
        "conflict": 409,
        "off": 409,
        "rate_limited": 429,
    }

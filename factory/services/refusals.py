"""The factory's refusals: input that does not check out (400, with the field errors), a draft
or template that does not exist (404), work its state does not allow (409)."""

from __future__ import annotations

from portal.refusals import Refused


class FactoryRefused(Refused):
    status_by_code = {**Refused.status_by_code, "invalid": 400, "not_found": 404, "gone": 410}

    @property
    def errors(self) -> list[dict]:
        """The field errors, for a refusal of a configuration."""
        return list(self.details.get("errors", []))

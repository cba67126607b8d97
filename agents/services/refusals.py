"""Why a lifecycle action is refused: one base (``portal.refusals.Refused``), 409, or 503 when no worker can be reached."""

from __future__ import annotations

import logging

from portal.refusals import Refused

logger = logging.getLogger(__name__)


# The code of a refusal because the task queue could not take the work (nothing was changed).
UNAVAILABLE = "unavailable"


class ActionRefused(Refused):
    """An action that cannot go ahead, with a sentence saying why and what to do: 409, or 503
    when no worker could be reached (code ``unavailable``: try again in a moment)."""


class Conflict(ActionRefused):
    """Something else is already happening to this agent."""


class NeedsConfirmation(ActionRefused):
    """The action affects other agents; ask again with ``confirm=True``."""

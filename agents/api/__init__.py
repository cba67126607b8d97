"""JSON API for agents under /api/platform/: the registry, history, the eight actions, operations
(``agents``), bulk operations (``bulk``), errors with their one-click recoveries (``errors``),
and workflow runs and definitions under /orchestration (``workflows``).

Same service functions as the pages, the admin and the ``agents`` command; the schemas and
serializers are ``agents.schemas``, shared with the command's ``--json``. A refusal answers
``{"detail": "<what went wrong and what to do>", "code": "..."}`` with its status (one handler,
in ``portal.api``); ``GET /metrics`` is observability's.
"""

from __future__ import annotations

from ninja import Router

from agents.api import agents, bulk, errors, workflows

router = Router(tags=["agents"])
for part in (agents, bulk, errors, workflows):
    # The OpenAPI operation ids stay what they were when the API was one module
    # (agents_api_<view>), so clients generated from the document keep their method names.
    for path_view in part.router.path_operations.values():
        for operation in path_view.operations:
            operation.operation_id = f"agents_api_{operation.view_func.__name__}"
    router.add_router("", part.router)

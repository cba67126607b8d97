"""Errors the portal saw, their patterns and rate, one-click recoveries, and the global switch
for automatic recovery."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router
from ninja.errors import HttpError
from ninja.responses import Status

from agents import errors
from agents.models import Agent, AgentError
from agents.schemas import (
    AutomaticRecoveryIn,
    AutomaticRecoveryOut,
    ErrorOut,
    ErrorStatsOut,
    IgnoreIn,
    PatternOut,
    RecoverIn,
    RecoveryAccepted,
    RecoveryProblem,
    automatic_recovery_out,
    error_out,
    error_stats_out,
    errors_with_attempts,
    pattern_out,
    recovery_accepted_out,
)
from portal.actors import Actor
from portal.refusals import BadFilter, BadRequest
from portal.schemas import Problem

router = Router()

ERROR_LIMIT_MAX = 500
# Refusals of a recovery the error does not offer: the answer lists the ones it does.
NAMES_THE_OFFER = ("unknown", "not_offered")


def _error_or_404(error_id: int) -> AgentError:
    try:
        return errors_with_attempts().get(pk=error_id)
    except AgentError.DoesNotExist:
        raise HttpError(
            404, f"There is no error #{error_id}; GET /api/platform/errors lists them."
        ) from None


def _agent_filter(slug: str) -> Agent:
    try:
        return Agent.objects.get(slug=slug)
    except Agent.DoesNotExist:
        raise HttpError(
            400, f"agent={slug!r} is not an agent; GET /api/platform/agents lists them."
        ) from None


def _since(days: int) -> datetime:
    if not 1 <= days <= 366:
        raise HttpError(400, f"days={days} is out of range; give a whole number from 1 to 366.")
    return timezone.now() - timedelta(days=days)


@router.get(
    "/errors",
    response=list[ErrorOut],
    summary="Errors the portal saw, newest first, with root cause, suggestions and attempts",
)
def list_errors(
    request: HttpRequest,
    status: str | None = None,
    open: bool | None = None,
    agent: str | None = None,
    classification: str | None = None,
    limit: int = 50,
):
    try:
        rows = errors_with_attempts().filtered(
            status=status, classification=classification, agent=agent
        )
    except BadFilter as bad:
        raise HttpError(400, bad.spelled(f"{bad.field}=")) from None
    if open is not None:
        rows = rows.open() if open else rows.closed()
    return [error_out(error) for error in rows[: max(1, min(limit, ERROR_LIMIT_MAX))]]


@router.get(
    "/errors/patterns",
    response=list[PatternOut],
    summary="The same failure grouped: how often, on how many agents, first and last seen",
)
def error_patterns(request: HttpRequest, days: int = 7, agent: str | None = None):
    rows = errors.patterns(since=_since(days), agent=_agent_filter(agent) if agent else None)
    return [pattern_out(row) for row in rows]


@router.get(
    "/errors/stats",
    response=ErrorStatsOut,
    summary="The error rate, open errors, and counts per agent and classification",
)
def error_stats(request: HttpRequest, days: int = 7):
    return error_stats_out(
        errors.error_rate(), errors.counts_by_agent_and_class(since=_since(days))
    )


@router.get(
    "/errors/automatic-recovery",
    response=AutomaticRecoveryOut,
    summary="Whether the portal restarts failed agents by itself (the global kill switch)",
)
def get_automatic_recovery(request: HttpRequest):
    return automatic_recovery_out()


@router.put(
    "/errors/automatic-recovery",
    response={200: AutomaticRecoveryOut, 400: Problem, 403: Problem},
    summary="Switch automatic recovery on or off for the whole fleet (Admin)",
)
def put_automatic_recovery(request: HttpRequest, payload: AutomaticRecoveryIn):
    if payload.on is None:
        raise BadRequest('Send {"on": true} or {"on": false}.', "invalid")
    errors.set_automatic_recovery(payload.on, Actor.from_request(request))
    return automatic_recovery_out()


@router.get(
    "/errors/{error_id}",
    response={200: ErrorOut, 404: Problem},
    summary="One error: root cause, evidence, suggestions, and every recovery attempt's outcome",
)
def get_error(request: HttpRequest, error_id: int):
    return error_out(_error_or_404(error_id))


@router.post(
    "/errors/{error_id}/recover",
    response={202: RecoveryAccepted, 400: RecoveryProblem, 403: Problem, 404: Problem,
              409: RecoveryProblem, 503: RecoveryProblem},
    summary="Run one of the error's one-click recoveries; GET the error for the outcome",
)  # fmt: skip
def recover_error(request: HttpRequest, error_id: int, payload: RecoverIn | None = None):
    payload = payload or RecoverIn()
    error = _error_or_404(error_id)
    try:
        attempt = errors.request_recovery(error, payload.action, Actor.from_request(request))
    except errors.RecoveryRefused as refused:
        if refused.code in NAMES_THE_OFFER:
            offered = [suggestion["action"] for suggestion in error.one_click]
            refused.details = {**refused.details, "offered": offered}
        raise
    return Status(202, recovery_accepted_out(attempt, error))


@router.post(
    "/errors/{error_id}/ignore",
    response={200: ErrorOut, 403: Problem, 404: Problem, 409: RecoveryProblem},
    summary="Close an error without fixing it (not worth acting on), with the reason",
)
def ignore_error(request: HttpRequest, error_id: int, payload: IgnoreIn | None = None):
    payload = payload or IgnoreIn()
    errors.ignore_error(_error_or_404(error_id), Actor.from_request(request), payload.reason)
    return error_out(_error_or_404(error_id))

"""Celery tasks of the agents app: thin wrappers that load ids and call services."""

from __future__ import annotations

from celery import shared_task

from agents import services


@shared_task(name="agents.run_operation", ignore_result=True, acks_late=True)
def run_operation_task(operation_id: str) -> str:
    """Carry out a requested lifecycle action. A redelivered task finds it finished and stops."""
    return services.run_operation(operation_id).status

"""Sandbox runs: a real agentd per run, its test tasks checked, everything torn down."""

from __future__ import annotations

import pytest

from factory.models import SandboxRun
from factory.services import drafts, sandbox


@pytest.fixture
def memory_draft(catalog, operator_actor):
    draft = drafts.create_draft(catalog["memory"], operator_actor)
    drafts.set_fields(
        draft, {"name": "Acme Memory", "slug": "acme-memory", "owner": "Acme"}, operator_actor
    )
    return draft


def test_the_blank_template_passes_its_test_in_a_real_sandbox_and_is_torn_down(
    catalog, operator_actor, roots, redis_client
) -> None:
    draft = drafts.create_draft(catalog["blank"], operator_actor)
    run = sandbox.start_sandbox(draft.template, draft.values, {}, operator_actor, draft=draft)
    done = sandbox.run_sandbox(run.pk)
    assert done.status == SandboxRun.Status.PASSED, (done.error, done.results, done.logs[-5:])
    assert done.results[0]["output"] == {"hello": "world"}
    assert done.latency_p50_ms is not None and done.peak_memory_mb
    assert any("ready" in line["text"] for line in done.logs)
    assert done.torn_down_at is not None
    assert not list(redis_client.scan_iter(match=f"agents:{done.name}:*"))
    left = {str(path.relative_to(roots[1])) for path in roots[1].rglob("*")}
    assert left <= {".locks", ".locks/ports.lock"}, left

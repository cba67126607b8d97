"""The agents core's service layer: the one place where agents change.

Web views, the JSON API, the admin and the commands call these, through this package's names
(``services.request_action``...); inside the core, modules import the submodule they need.

Layers, lowest first (each imports only those before it): ``refusals``, ``graph``, then
``agents.errors.record`` (what went wrong), ``actions`` and ``undo``, ``supervision``,
``registry``; then ``agents.errors.recovery`` uses them all.
"""

# ruff: noqa: F401 (this package re-exports its modules' names)

# agents.errors loads first: its recovery module imports this package's submodules, which
# import agents.errors.record; loading errors from here first keeps that order whichever
# package is imported first.
import agents.errors
from agents.placement import build_runtime, runtime_for, spec_for
from agents.services.actions import (
    MAX_ATTEMPTS,
    OPERATION_LEASE,
    ActionCheck,
    available_actions,
    check_action,
    illegal_action_message,
    request_action,
    resume_stalled_operations,
    run_operation,
)
from agents.services.graph import (
    DependencyGraph,
    check_dependencies_acyclic,
    dependency_order,
    get_agent,
    in_action_order,
    transitive_dependencies,
)
from agents.services.liveconfig import Applied, check_patch, patch_config, roll_back_config
from agents.services.refusals import UNAVAILABLE, ActionRefused, Conflict, NeedsConfirmation
from agents.services.registry import (
    NewAgent,
    pick_new_ports,
    register_agent,
    release_agent,
    require_viewer,
    rollback_config,
    seed_platform_agents,
    seed_step,
    set_memory_limit,
    update_agent_settings,
)
from agents.services.supervision import (
    auto_restart,
    check_drift,
    describe_exit,
    due_restarts,
    reconcile_agent,
    record_crash,
    record_drift,
    record_health,
    restart_delay,
)
from agents.services.undo import (
    UNDO_SLACK_SECONDS,
    UNDO_WAIT_SECONDS,
    Undone,
    can_undo,
    undo_operation,
)

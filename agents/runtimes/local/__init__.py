"""The local runtime: every agent replica is a real agentd process on this machine.

Layout under ``root`` (the portal uses ``var/agents/``)::

    <slug>/ports.json           ports reserved by provision, one per replica
    <slug>/spec.json            the process spec written by deploy
    <slug>/replica-<n>/
        launch.json, config.json  agentd's command line, environment and config (written by start)
        shim.pid, pid             the supervisor shim's and agentd's pids
        agent.log, previous.log   agentd's output, this run and the run before
        exit.json                 how the last run ended (written by the shim)
        shim.log                  the shim's own diagnostics
        data/                     agentd's working directory

Processes outlive whoever started them: ``start`` launches one shim per replica
(:mod:`agents.runtimes.shim`) in a session of its own, and the shim runs agentd as its child,
records its exit and publishes runtime events to the Redis stream ``runtime:local:events``. A
restarted portal finds its agents again from the pid files (:meth:`LocalRuntime.adopt`).

No Django here: the portal passes ``root`` and ``redis_url`` in.
"""

from .events import EVENTS_STREAM
from .runtime import DEFAULT_PORT_RANGE, LocalRuntime

__all__ = ["DEFAULT_PORT_RANGE", "EVENTS_STREAM", "LocalRuntime"]

"""The Docker runtime: every agent replica is a container of a Docker engine.

What it creates for an agent ``<slug>``::

    volume     waooaw-<slug>-data         the agent's data, mounted at /data in every replica;
                                          its labels remember the ports provision reserved
    container  waooaw-<slug>-<replica>    one per replica, from waooaw/agentd:<version>, with
                                          labels waooaw.managed=true, waooaw.agent=<slug>,
                                          waooaw.replica=<n>, waooaw.version, waooaw.port and
                                          a hash of the spec it was made from

Containers run on the host's network by default, agentd listening on 127.0.0.1 at the agent's
reserved port: the portal probes and reaches agents exactly as on the local runtime, and the
agents reach the same Redis. The engine restarts nothing by itself (restart policy "no"): the
portal's monitor reads the engine's event stream and restarts crashed agents by their policy.

No Django here: the portal passes the engine's address, the image and Redis in.
"""

from .containers import DockerReplicaStatus, HealthCheck
from .runtime import DEFAULT_PORT_RANGE, DockerRuntime

__all__ = ["DEFAULT_PORT_RANGE", "DockerReplicaStatus", "DockerRuntime", "HealthCheck"]

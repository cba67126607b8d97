"""Per-agent liveness and readiness probes (HTTP, TCP or exec) with Kubernetes' timings and
thresholds: ``schema`` (the stored shape, its defaults and the one validation every door uses),
``checks`` (one probe of one replica), ``engine`` (a monitor round with thresholds),
``services`` (reading and changing them), and the doors: ``views`` (the agent page's panel),
``api``, the ``probes`` command; the admin shows them read-only.

This package's ``__init__`` imports nothing: the runtimes' placement layer reads ``schema`` and
``checks`` below the services.
"""

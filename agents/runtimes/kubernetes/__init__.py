"""The Kubernetes runtime: every agent is a Deployment, a Service and a ConfigMap in one namespace.

- **provision** checks the namespace (``KUBERNETES_NAMESPACE``) exists, creating it only if the
  portal may; **deploy** creates or updates the agent's objects with 0 replicas
  (:mod:`.objects` builds them as plain dicts, validated against the Kubernetes schemas in the
  tests); **start**/**stop** scale between the agent's replicas and 0 and wait for the pods;
  **suspend**/**resume** scale likewise but mark the Deployment ``waooaw.suspended=true``, so a
  suspended agent stays distinguishable from a stopped one; **restart** is a rolling restart
  (the pod template's ``kubectl.kubernetes.io/restartedAt``); **remove** deletes the three
  objects.
- The portal cannot reach the pods, so health (:meth:`KubernetesRuntime.probe`) comes from
  pod readiness, which the kubelet takes from agentd's ``/readyz`` (liveness: ``/healthz``).
- **events** watches the managed pods and Deployments: a container termination becomes
  ``exited`` (``oom`` for OOMKilled), a deleted Deployment ``removed``; the event id is the
  object's resourceVersion, so the monitor resumes the watch where it stopped.

Replica numbers: a Deployment's pods have no ordinal, so agentd gets no ``AGENT_REPLICA`` and
reports replica 0 in every pod; the pod's name is given to it as ``AGENT_INSTANCE`` (downward
API). The portal numbers the live pods of an agent oldest first (creation time, then name):
that number is the ``replica`` of status, logs, stats and events.

Credentials: ``KUBECONFIG`` (or ``~/.kube/config``) outside the cluster, the pod's service
account inside it (``KUBERNETES_IN_CLUSTER=true``); ``deploy/kubernetes/`` has the RBAC the
portal needs and how to run it against a real cluster.
"""

from .runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime"]

"""The agents app's choices (besides the lifecycle's states, in ``agents.lifecycle``): pure
data, read by the models, the read layer and the pages."""

from __future__ import annotations

from django.db import models


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNHEALTHY = "unhealthy", "Unhealthy"


class Tier(models.TextChoices):
    PLATFORM = "platform", "Platform CoE"
    CUSTOMER = "customer", "Customer"


class RuntimeKind(models.TextChoices):
    LOCAL = "local", "Local process"
    DOCKER = "docker", "Docker"
    KUBERNETES = "kubernetes", "Kubernetes"


class RestartPolicy(models.TextChoices):
    ON_FAILURE = "on-failure", "Restart on failure"
    NEVER = "never", "Never restart"


class ErrorClass(models.TextChoices):
    TRANSIENT = "transient", "Transient"
    PERMANENT = "permanent", "Permanent"
    CONFIGURATION = "configuration", "Configuration"
    DEPENDENCY = "dependency", "Dependency"
    RESOURCE = "resource", "Resource"

"""Who is acting: a signed-in user, an API token, an on-call command, or the system.

Every service function takes an ``Actor``. It answers the permission question the same way
whichever door the request came through, and it is what the audit trail records.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied

from portal import roles

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

    from portal.models import ApiToken


@dataclass(frozen=True)
class Actor:
    kind: str  # "user", "token", "command" or "system"
    user: AbstractBaseUser | None = None
    token: ApiToken | None = None
    source: str = ""
    name: str = ""
    # The label recorded when the request was made, for work carried out later on its behalf.
    recorded_label: str = ""
    # For rendering what someone of this role would see (server push); never used to act.
    assumed_role: str = ""
    # The door a request came through: "page", "api" or "admin" (see ``door``).
    via: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        token = getattr(request, "api_token", None)
        source = request.META.get("REMOTE_ADDR", "")
        if token is not None:
            return cls(kind="token", user=token.user, token=token, source=source, via="api")
        path = request.path_info
        via = (
            "api" if path.startswith("/api/") else "admin" if path.startswith("/admin/") else "page"
        )
        return cls(kind="user", user=request.user, source=source, via=via)

    @classmethod
    def command(cls, name: str, user: AbstractBaseUser | None = None) -> Actor:
        """An on-call engineer at the server's shell; shell access already implies Admin."""
        return cls(kind="command", user=user, source=f"manage.py {name}", name=getpass.getuser())

    @classmethod
    def system(cls, source: str) -> Actor:
        return cls(kind="system", source=source)

    @property
    def label(self) -> str:
        if self.recorded_label:
            return self.recorded_label
        if self.kind == "token" and self.token is not None:
            return f"token:{self.token.prefix} ({self.user.get_username()})"
        if self.kind == "user" and self.user is not None:
            return f"user:{self.user.get_username()}"
        if self.kind == "command":
            return f"command:{self.name}" + (f" as {self.user.get_username()}" if self.user else "")
        return f"system:{self.source}"

    @property
    def door(self) -> str:
        """Which door the actor came through, as the audit log names it: page, api, admin,
        command or system (work a worker carries out later counts as the system's)."""
        if self.via:
            return self.via
        if self.kind == "token":
            return "api"
        if self.kind == "command":
            return "command"
        if self.kind == "user" and self.source != "worker":
            return "page"
        return "system"

    @property
    def role(self) -> str | None:
        if self.assumed_role:
            return self.assumed_role
        if self.kind in ("command", "system") and self.user is None:
            return roles.ADMIN
        return roles.role_of(self.user)

    def has(self, permission: str) -> bool:
        """Whether this actor holds ``permission`` (a name from ``roles.PERMISSIONS``)."""
        return roles.role_allows(self.role, permission)

    def require(self, permission: str, doing: str) -> None:
        """Raise ``PermissionDenied`` with a sentence a person can act on."""
        if not self.has(permission):
            needed = roles.lowest_role_with(permission)
            raise PermissionDenied(
                f"You cannot {doing}: it needs the {needed} role and you are "
                f"{self.role or 'without a role'}. Ask an Admin if you need it."
            )

"""social-auth pipeline steps for Google sign-in."""

from __future__ import annotations

from portal import roles
from portal.actors import Actor
from portal.services import record_audit


def assign_role(backend, user=None, is_new: bool = False, details=None, *args, **kwargs) -> None:
    """Give a user who signs in with Google for the first time the role the rules map them to."""
    if user is None:
        return
    if is_new or roles.role_of(user) is None:
        email = (details or {}).get("email") or user.email
        role = roles.role_for_email(email)
        roles.set_role(user, role)
        record_audit(
            Actor.system("google-sign-in"),
            "user.role",
            target=user.get_username(),
            role=role,
            new_user=is_new,
        )

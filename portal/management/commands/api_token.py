"""``manage.py api_token create|list|revoke``: API tokens for automation."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from portal import roles, services
from portal.actors import Actor
from portal.models import ApiToken


class Command(BaseCommand):
    help = "Create, list and revoke API tokens. A token acts as its user, with that user's role."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = sub.add_parser(
            "create", help="Create a token for a user and print it (shown once)."
        )
        create.add_argument("user", help="The user's email or username.")
        create.add_argument(
            "--name", default="", help="What the token is for, e.g. 'deploy pipeline'."
        )
        create.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="Days until it expires (default: never).",
        )
        listing = sub.add_parser("list", help="List tokens (never their secret).")
        listing.add_argument("--user", help="Only this user's tokens.")
        listing.add_argument(
            "--all", action="store_true", help="Include revoked and expired tokens."
        )
        revoke = sub.add_parser("revoke", help="Revoke a token by its prefix or full text.")
        revoke.add_argument("token", help="The token's prefix (see `list`) or the whole token.")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"_{action}")(**options)

    def _create(self, user: str, name: str, expires_in_days: int | None, **options) -> None:
        account = _find_user(user)
        if roles.role_of(account) is None:
            raise CommandError(
                f"{account.get_username()} has no role, so a token would be refused everywhere. "
                "Give the user a role first (admin site, Users)."
            )
        try:
            token, text = services.create_api_token(
                account,
                Actor.command("api_token create"),
                name=name,
                expires_in_days=expires_in_days,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Token {token.prefix} for {account.get_username()} ({roles.role_of(account)}). "
            "Copy it now; it is not shown again:"
        )
        self.stdout.write(text)

    def _list(self, user: str | None, all: bool, **options) -> None:
        tokens = ApiToken.objects.select_related("user")
        if not all:
            tokens = tokens.active()
        if user:
            tokens = tokens.filter(user=_find_user(user))
        rows = [
            (
                token.prefix,
                token.user.get_username(),
                token.name or "-",
                f"{token.created_at:%Y-%m-%d}",
                f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never",
                "revoked" if token.is_revoked else ("expired" if token.is_expired else "active"),
            )
            for token in tokens
        ]
        header = ("PREFIX", "USER", "NAME", "CREATED", "LAST USED", "STATUS")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(
                    str(value).ljust(width) for value, width in zip(row, widths, strict=True)
                ).rstrip()
            )

    def _revoke(self, token: str, **options) -> None:
        try:
            found = services.find_api_token(token)
        except services.TokenError as exc:
            raise CommandError(str(exc)) from None
        if services.revoke_api_token(found, Actor.command("api_token revoke")):
            self.stdout.write(f"Revoked token {found.prefix} of {found.user.get_username()}.")
        else:
            self.stdout.write(f"Token {found.prefix} was already revoked; nothing changed.")


def _find_user(identifier: str):
    User = get_user_model()
    matches = list(User.objects.filter(Q(username=identifier) | Q(email__iexact=identifier))[:2])
    if not matches:
        raise CommandError(
            f"No user {identifier!r}. Users sign in once with Google, or an Admin adds them."
        )
    if len(matches) > 1:
        raise CommandError(f"{identifier!r} matches more than one user; give the username instead.")
    return matches[0]

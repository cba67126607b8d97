"""``/api/platform/me``: who you are, your own API tokens and your browser sessions.

Every route acts on the caller's own user; the body of a POST is read here, not by a schema, so
each wrong value is a 400 naming the field (the page says the same sentence), never a 422.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError

from portal.actors import Actor
from portal.models import ApiToken
from portal.profile import services
from portal.schemas import Problem

router = Router(tags=["profile"])


class RoleOriginOut(Schema):
    kind: str
    sentence: str
    at: datetime | None
    by: str
    rule: str


class MeOut(Schema):
    username: str
    name: str
    email: str
    role: str | None
    role_origin: RoleOriginOut
    may: list[str]
    sign_in_methods: list[str]
    authenticated_by: str


class TokenOut(Schema):
    prefix: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    status: str


class NewTokenOut(Schema):
    token: TokenOut
    text: str


class RevokedOut(Schema):
    token: TokenOut
    revoked: bool


class SessionOut(Schema):
    id: int
    created_at: datetime
    last_seen_at: datetime
    ip: str
    user_agent: str
    browser: str
    signed_in_with: str
    current: bool


class SignedOutOut(Schema):
    signed_out: int


CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": services.NAME_LENGTH},
                        "expires_in_days": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": services.MAX_EXPIRY_DAYS,
                        },
                    },
                    "required": ["name", "expires_in_days"],
                },
                "example": {"name": "deploy pipeline", "expires_in_days": 30},
            }
        },
    }
}


def token_out(token: ApiToken) -> dict:
    return {
        "prefix": token.prefix,
        "name": token.name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
        "status": services.token_status(token),
    }


def _session_key(request: HttpRequest) -> str | None:
    if getattr(request, "api_token", None) is not None:
        return None
    return request.session.session_key


@router.get(
    "/me",
    response={200: MeOut, 403: Problem},
    summary="Who the caller is: names, sign-in methods, the role, what it allows and where it "
    "comes from (a Google sign-in rule, an Admin, ...), and how this request is authenticated",
)
def me(request: HttpRequest):
    return services.profile_of(Actor.from_request(request))


@router.get(
    "/me/tokens",
    response={200: list[TokenOut], 403: Problem},
    summary="Your own API tokens, newest first (active, expired and revoked)",
)
def my_tokens(request: HttpRequest):
    return [token_out(token) for token in services.own_tokens(Actor.from_request(request))]


@router.post(
    "/me/tokens",
    response={201: NewTokenOut, 400: Problem, 403: Problem, 409: Problem},
    summary="Create an API token for yourself, acting with your role: {name, expires_in_days "
    "(1-365)}. Its text is in this answer only. From a signed-in session, not with a token; at "
    "most 10 active",
    openapi_extra=CREATE_BODY,
)
def create_my_token(request: HttpRequest):
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise HttpError(400, f"The body is not JSON: {error}.") from None
    if not isinstance(body, dict):
        raise HttpError(
            400, 'Send a JSON object: {"name": "deploy pipeline", "expires_in_days": 30}.'
        )
    token, text = services.create_own_token(
        Actor.from_request(request),
        name=body.get("name"),
        expires_in_days=body.get("expires_in_days"),
    )
    return Status(201, {"token": token_out(token), "text": text})


@router.delete(
    "/me/tokens/{prefix}",
    response={200: RevokedOut, 403: Problem, 404: Problem},
    summary="Revoke one of your API tokens by its prefix (revoked false: it already was)",
)
def revoke_my_token(request: HttpRequest, prefix: str):
    token, revoked = services.revoke_own_token(Actor.from_request(request), prefix)
    return {"token": token_out(token), "revoked": revoked}


@router.get(
    "/me/sessions",
    response={200: list[SessionOut], 403: Problem},
    summary="Your signed-in browser sessions, the one making this request first (current)",
)
def my_sessions(request: HttpRequest):
    actor = Actor.from_request(request)
    return [vars(session) for session in services.own_sessions(actor, _session_key(request))]


@router.post(
    "/me/sessions/sign-out-others",
    response={200: SignedOutOut, 403: Problem},
    summary="Sign out every other browser session of yours (with a token: every one)",
)
def sign_out_my_other_sessions(request: HttpRequest):
    actor = Actor.from_request(request)
    return {"signed_out": services.sign_out_other_sessions(actor, _session_key(request))}


@router.delete(
    "/me/sessions/{session_id}",
    response={200: SessionOut, 403: Problem, 404: Problem, 409: Problem},
    summary="Sign out one of your other browser sessions by its id",
)
def sign_out_my_session(request: HttpRequest, session_id: str):
    actor = Actor.from_request(request)
    return vars(services.sign_out_session(actor, session_id, _session_key(request)))

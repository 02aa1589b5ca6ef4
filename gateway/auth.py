"""Who is calling a protocol door: a personal API token with the gateway scope, sent as
`Authorization: Bearer` (OpenAI clients, the AI SDK, AG-UI) or `x-api-key` (Anthropic clients).

The token is read afresh on every call (accounts/models.py `ApiToken.find`): a revoked or expired
one is refused by every process at once."""

from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from accounts.middleware import bearer_from_header
from accounts.models import ApiToken


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was not authenticated: `missing`, `invalid` (unknown, revoked, expired) or `scope`."""

    reason: str

    @property
    def words(self) -> str:
        return {
            "missing": "No API key: send a Parley API token as 'Authorization: Bearer <token>' or 'x-api-key: <token>'.",
            "invalid": "The API key is unknown, revoked or expired.",
            "scope": "This API token does not have the gateway scope.",
        }[self.reason]


def raw_key(request: HttpRequest) -> str | None:
    return bearer_from_header(request.headers.get("Authorization")) or request.headers.get("x-api-key") or None


async def gateway_token(request: HttpRequest) -> ApiToken | Refusal:
    raw = raw_key(request)
    if raw is None:
        return Refusal("missing")
    token = await sync_to_async(ApiToken.find)(raw.strip())
    if token is None:
        return Refusal("invalid")
    if not token.allows(ApiToken.Scope.GATEWAY):
        return Refusal("scope")
    return token

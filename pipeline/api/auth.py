"""Who is calling: an API key (`x-api-key`) or a Microsoft Entra ID token (`Authorization: Bearer`).

API keys are for servers and scripts. Settings hold only their SHA-256 (`name:sha256hex`), so a
leaked setting is not a leaked key; `python -m pipeline keys add NAME` makes one. Admin keys
(`DARKROOM_ADMIN_KEYS`) also open the operations routes.

Entra ID tokens are validated here with PyJWT against the tenant's published signing keys
(issuer, audience, signature, expiry): the app does not depend on App Service authentication
being configured in front of it, and the same code runs locally against a test key set. An app
role (`DARKROOM_ENTRA_ADMIN_ROLE`) in the token's `roles` makes the caller an admin.

The caller's `id` is what owns images: `key-<name>` or `entra-<object id>`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from functools import lru_cache
from typing import Literal

import jwt
from pydantic import BaseModel, Field

from pipeline.api.errors import api_error
from pipeline.api.settings import ApiSettings

log = logging.getLogger("darkroom.api.auth")
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
OWNER = re.compile(r"^(key|entra)-[A-Za-z0-9_-]{1,64}$")


class Caller(BaseModel):
    id: str = Field(description="Owner id of the caller's images: key-<name> or entra-<oid>.")
    name: str = Field(description="The key's name, or the token's name/preferred_username.")
    kind: Literal["key", "entra"]
    admin: bool = Field(description="May use the operations routes.")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def caller_for_key(key: str, api: ApiSettings) -> Caller | None:
    digest = key_digest(key)  # comparing digests leaks nothing about a key's characters
    if name := api.admin_keys.get(digest):
        return Caller(id=f"key-{name}", name=name, kind="key", admin=True)
    if name := api.api_keys.get(digest):
        return Caller(id=f"key-{name}", name=name, kind="key", admin=False)
    return None


@lru_cache(maxsize=8)
def _jwks(url: str) -> jwt.PyJWKClient:
    # Keys cached for 15 minutes; an unknown `kid` (key rotation) refetches once.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=900, timeout=5)


def _issuers(api: ApiSettings) -> list[str]:
    issuers = [f"{api.entra_authority}/{api.entra_tenant_id}/v2.0"]
    if api.entra_authority == DEFAULT_AUTHORITY:  # v1.0 access tokens (accessTokenAcceptedVersion)
        issuers.append(f"https://sts.windows.net/{api.entra_tenant_id}/")
    return issuers


def caller_for_token(token: str, api: ApiSettings) -> Caller:
    if not api.entra_enabled:
        raise api_error(401, "bearer tokens are not accepted: Entra ID is not configured")
    url = f"{api.entra_authority}/{api.entra_tenant_id}/discovery/v2.0/keys"
    try:
        key = _jwks(url).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=list(api.entra_audiences),
            issuer=_issuers(api),
            leeway=60,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWKClientConnectionError as exc:
        log.warning("cannot fetch Entra ID signing keys from %s: %s", url, exc)
        raise api_error(503, "cannot check the token now; retry") from None
    except jwt.PyJWTError as exc:
        log.info("bearer token refused: %s", exc)
        raise api_error(401, "invalid bearer token") from None
    subject = str(claims.get("oid") or claims.get("sub") or "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", subject):
        raise api_error(401, "invalid bearer token")
    roles = claims.get("roles") or []
    return Caller(
        id=f"entra-{subject}",
        name=str(claims.get("preferred_username") or claims.get("name") or subject)[:200],
        kind="entra",
        admin=isinstance(roles, list) and api.entra_admin_role in roles,
    )


def identify(api_key: str | None, authorization: str | None, api: ApiSettings) -> Caller:
    """The caller, or 401. A request that carries both is refused: which would own the image?"""
    if api_key and authorization:
        raise api_error(401, "send x-api-key or Authorization, not both")
    if api_key:
        if caller := caller_for_key(api_key, api):
            return caller
        raise api_error(401, "unknown API key")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise api_error(401, "Authorization must be 'Bearer <token>'")
        return caller_for_token(token.strip(), api)
    raise api_error(401, "an x-api-key header or an Authorization: Bearer token is required")

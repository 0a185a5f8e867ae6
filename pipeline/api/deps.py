"""What every route depends on: the process's clients, and the caller (authenticated, limited)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pipeline.api.auth import Caller, identify
from pipeline.api.errors import api_error, too_many
from pipeline.api.limits import LimitExceeded, Limits
from pipeline.api.links import Signer
from pipeline.engine.runner import StepRunner, runner
from pipeline.stores.azure_clients import AzureClients, clients
from pipeline.stores.results import ResultsStore

log = logging.getLogger("darkroom.api")


@dataclass
class Services:
    azure: AzureClients

    @cached_property
    def runner(self) -> StepRunner:
        return runner()

    @property
    def settings(self):
        return self.azure.settings

    @cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.azure.images_container)

    @cached_property
    def signer(self) -> Signer:
        return Signer(self.azure.blob_service, self.settings.storage.connection_string)

    @cached_property
    def limits(self) -> Limits:
        return Limits(self.azure.table_service, self.settings.api)


_services: Services | None = None


def services() -> Services:
    global _services
    azure = clients()
    if _services is None or _services.azure is not azure:
        _services = Services(azure)
    return _services


def client_address(request: Request, trusted_proxies: int = 0) -> str:
    """The client's address, as far as it can be believed.

    The platform's front end appends the address it saw to X-Forwarded-For: Azure's front end
    does (Azure/Azure-Functions#1597), and the local host does the same (local.host.server).
    That last entry is the peer of the front end; anything left of it was sent by that peer,
    and is believed only for the `trusted_proxies` (DARKROOM_TRUSTED_PROXIES) proxies the
    deployment puts in front (Front Door, Application Gateway), each of which appends its own
    peer. So the client is the entry `trusted_proxies` places left of the last; a client's own
    made-up entries are never reached. Ports are dropped (`1.2.3.4:5678`, `[::1]:443`)."""
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    if hops:
        address = hops[max(0, len(hops) - 1 - trusted_proxies)]
    else:
        address = request.client.host if request.client else "unknown"
    if address.startswith("["):  # [IPv6]:port
        address = address[1:].split("]")[0]
    elif address.count(":") == 1:  # IPv4:port, as Azure's front ends send it
        address = address.split(":")[0]
    return address[:64]


api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="An API key.")
bearer = HTTPBearer(auto_error=False, description="A Microsoft Entra ID access token.")


def current_caller(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_header)] = None,
    token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Caller:
    svc = services()
    # `token` declares the scheme in the OpenAPI document; the raw header is checked here, so
    # a malformed one is a 401 with a reason rather than "not authenticated".
    try:
        caller = identify(api_key, request.headers.get("authorization"), svc.settings.api)
    except Exception as exc:
        if getattr(exc, "status_code", None) == 401:
            try:
                address = client_address(request, svc.settings.api.trusted_proxies)
                svc.limits.take_failed_sign_in(address)
            except LimitExceeded as over:
                raise too_many("too many failed sign-ins", over.retry_after) from None
        raise
    try:
        svc.limits.take_request(caller.id)
    except LimitExceeded as over:
        raise too_many(str(over.what), over.retry_after) from None
    return caller


def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.admin:
        raise api_error(403, "an admin key is needed")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]

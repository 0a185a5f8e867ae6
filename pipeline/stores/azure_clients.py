"""Azure SDK clients, built once per process and reused by every invocation.

A connection (`pipeline.settings.Connection`) is either a connection string — the local
emulators — or identity-based endpoints in the Functions host's own setting format, where the
client authenticates with the managed identity: `ManagedIdentityCredential` when
`<NAME>__credential=managedidentity` (with `<NAME>__clientId` for a user-assigned identity), else
`DefaultAzureCredential` (a developer's `az login` on a laptop). No key is needed on Azure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from azure.cosmos import ContainerProxy, CosmosClient
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from pipeline.settings import Settings, get_settings
from pipeline.stores.connections import LOCAL_HOSTS, Connection, parse_connection_string

_credential_lock = threading.Lock()
_credentials: dict[tuple[str | None, str | None], object] = {}


def credential_for(kind: str | None = None, client_id: str | None = None):
    """One credential per (kind, client id) per process: token caches are shared, not rebuilt.

    `kind="managedidentity"` → the app's managed identity (user-assigned when `client_id`);
    otherwise `DefaultAzureCredential`, which on Azure also ends at the managed identity and on a
    laptop uses the developer's login."""
    with _credential_lock:
        key = (kind, client_id)
        if key not in _credentials:
            if kind == "managedidentity":
                from azure.identity import ManagedIdentityCredential

                _credentials[key] = ManagedIdentityCredential(client_id=client_id)
            else:
                from azure.identity import DefaultAzureCredential

                _credentials[key] = DefaultAzureCredential(managed_identity_client_id=client_id)
        return _credentials[key]


def default_credential():
    """The credential for services without a connection of their own (Vision, Event Grid)."""
    return credential_for(None, get_settings().identity_client_id)


def _quiet_if_local_emulator(connection_string: str) -> None:
    """The SDK skips TLS verification for a loopback emulator; its warning per call is noise."""
    endpoint = parse_connection_string(connection_string).get("AccountEndpoint", "")
    if urlsplit(endpoint).hostname in LOCAL_HOSTS:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


class MissingConnection(RuntimeError):
    """A connection setting is absent: a start-up configuration error, never an image error."""


# Connections kept per client. requests keeps 10 per host by default, and a worker runs up to
# batchSize x step queues (4 x 5) deliveries at once, each recording to Cosmos and sending to a
# queue: past 10, every extra connection was opened, used once and discarded, and each new TLS
# connection to Cosmos loads the system's CA certificates again (4 % of a worker's samples in a
# profile of the chain at 12 MP, before this).
POOL_CONNECTIONS = 32


def _loopback(connection_string: str) -> bool:
    """Every endpoint the connection string names is on this machine (the local emulators)."""
    urls = [v for v in parse_connection_string(connection_string).values() if "://" in str(v)]
    return bool(urls) and all(urlsplit(u).hostname in LOCAL_HOSTS for u in urls)


# What the storage SDKs give the transport they build themselves (azure.storage.*._shared.
# constants); a transport passed in gets azure-core's defaults instead: 4 KiB blocks, which cost
# a worker 17.7 ms of CPU per 4 MB download against 6.8 ms with these (bench/bench_requests.py),
# and 300 s timeouts, which let a dead connection hold a delivery for five minutes.
# tests/test_azure_clients.py checks they match.
STORAGE_TRANSPORT = {
    "connection_data_block_size": 256 * 1024,
    "connection_timeout": 20,
    "read_timeout": 60,
}


def http_transport(loopback: bool = False, **connection_config):
    """An HTTP transport whose connection pool fits the worker's concurrency.

    For the local emulators it also ignores the environment's proxy and .netrc settings: they
    can never apply to loopback, and requests re-reads them for every request (a profile of a
    worker showed the lookups on every storage and Cosmos call). `connection_config`:
    azure-core's ConnectionConfiguration keywords (block size, timeouts)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    session.trust_env = not loopback
    # The SDKs retry themselves (their own policies); the adapter must not retry under them.
    adapter = HTTPAdapter(
        pool_connections=4,
        pool_maxsize=POOL_CONNECTIONS,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True, **connection_config)


def _connect(connection: Connection, client_type, service: str):
    # Cosmos passes its own timeouts with every request; storage relies on the transport's.
    config = STORAGE_TRANSPORT if service in ("blob", "queue") else {}
    if connection.connection_string:
        if service == "account":
            _quiet_if_local_emulator(connection.connection_string)
        return client_type.from_connection_string(
            connection.connection_string,
            transport=http_transport(_loopback(connection.connection_string), **config),
        )
    if uri := connection.endpoint(service):
        return client_type(
            uri,
            credential=credential_for(connection.credential, connection.client_id),
            transport=http_transport(**config),
        )
    raise MissingConnection(f"set {connection.describe(service)}")


@dataclass
class AzureClients:
    """Lazily built clients for one settings snapshot; `clients()` returns the process-wide one."""

    settings: Settings

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        return _connect(self.settings.storage, BlobServiceClient, "blob")

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        return _connect(self.settings.storage, QueueServiceClient, "queue")

    @cached_property
    def table_service(self) -> TableServiceClient:
        return _connect(self.settings.storage, TableServiceClient, "table")

    @cached_property
    def cosmos(self) -> CosmosClient:
        return _connect(self.settings.cosmos, CosmosClient, "account")

    @cached_property
    def images_container(self) -> ContainerProxy:
        db = self.cosmos.get_database_client(self.settings.cosmos_database)
        return db.get_container_client(self.settings.cosmos_container)


_clients_lock = threading.Lock()
_clients: AzureClients | None = None


def clients() -> AzureClients:
    global _clients
    with _clients_lock:
        settings = get_settings()
        if _clients is None or _clients.settings is not settings:
            _clients = AzureClients(settings)
        return _clients

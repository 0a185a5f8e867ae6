"""Azure SDK clients, built once per process and reused by every invocation.

A connection is named like a Functions binding connection: the setting itself holds a connection
string (local emulators, or keys if a team insists), or `<NAME>__blobServiceUri`,
`<NAME>__queueServiceUri`, `<NAME>__accountEndpoint` hold endpoints and the client authenticates
with `DefaultAzureCredential` — the managed identity in Azure, no key anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from azure.cosmos import ContainerProxy, CosmosClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from pipeline.settings import COSMOS_CONNECTION, STORAGE_CONNECTION, Settings, get_settings

_credential_lock = threading.Lock()
_credential = None


def default_credential():
    global _credential
    with _credential_lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential


def _quiet_if_local_emulator(connection_string: str) -> None:
    """The SDK skips TLS verification for a loopback emulator; its warning per call is noise."""
    endpoint = parse_connection_string(connection_string).get("AccountEndpoint", "")
    if urlsplit(endpoint).hostname in ("127.0.0.1", "localhost"):
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


class MissingConnection(RuntimeError):
    """A connection setting is absent: a start-up configuration error, never an image error."""


def parse_connection_string(value: str) -> dict[str, str]:
    if value.strip() == "UseDevelopmentStorage=true":
        return {
            "BlobEndpoint": "http://127.0.0.1:10000/devstoreaccount1",
            "QueueEndpoint": "http://127.0.0.1:10001/devstoreaccount1",
            "TableEndpoint": "http://127.0.0.1:10002/devstoreaccount1",
        }
    parts = (p.split("=", 1) for p in value.split(";") if "=" in p)
    return {k.strip(): v.strip() for k, v in parts}


def _setting(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


@dataclass
class AzureClients:
    """Lazily built clients for one settings snapshot; `clients()` returns the process-wide one."""

    settings: Settings

    def _storage(self, client_type, service: str):
        env = self.settings.env
        if conn := _setting(env, STORAGE_CONNECTION):
            return client_type.from_connection_string(conn)
        if uri := _setting(env, f"{STORAGE_CONNECTION}__{service}ServiceUri"):
            return client_type(uri, credential=default_credential())
        raise MissingConnection(
            f"set {STORAGE_CONNECTION} (connection string) or "
            f"{STORAGE_CONNECTION}__{service}ServiceUri (managed identity)"
        )

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        return self._storage(BlobServiceClient, "blob")

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        return self._storage(QueueServiceClient, "queue")

    @cached_property
    def cosmos(self) -> CosmosClient:
        env = self.settings.env
        if conn := _setting(env, COSMOS_CONNECTION):
            _quiet_if_local_emulator(conn)
            return CosmosClient.from_connection_string(conn)
        if endpoint := _setting(env, f"{COSMOS_CONNECTION}__accountEndpoint"):
            return CosmosClient(endpoint, credential=default_credential())
        raise MissingConnection(
            f"set {COSMOS_CONNECTION} (connection string) or "
            f"{COSMOS_CONNECTION}__accountEndpoint (managed identity)"
        )

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

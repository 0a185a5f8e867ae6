"""How the app reaches Azure Storage and Cosmos DB: a connection string (the local emulators) or
identity-based settings (Azure), read as the Functions host reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.setting_reader import SettingReader

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STORAGE_SERVICES = ("blob", "queue", "table")


def parse_connection_string(value: str) -> dict[str, str]:
    """`Key=Value;…` → dict; the development-storage shortcut expands to Azurite's endpoints."""
    if value.strip() == "UseDevelopmentStorage=true":
        return {
            "BlobEndpoint": "http://127.0.0.1:10000/devstoreaccount1",
            "QueueEndpoint": "http://127.0.0.1:10001/devstoreaccount1",
            "TableEndpoint": "http://127.0.0.1:10002/devstoreaccount1",
        }
    parts = (p.split("=", 1) for p in value.split(";") if "=" in p)
    return {k.strip(): v.strip() for k, v in parts}


def _is_local_connection_string(value: str) -> bool:
    parts = parse_connection_string(value)
    endpoints = [v for k, v in parts.items() if k.endswith("Endpoint")]
    return bool(endpoints) and all(urlsplit(e).hostname in LOCAL_HOSTS for e in endpoints)


@dataclass(frozen=True)
class Connection:
    """A connection as the Functions host reads it: a connection string, or identity-based.

    Identity-based settings are the host's own format: `<NAME>__blobServiceUri`,
    `__queueServiceUri`, `__tableServiceUri` (or `__accountName`, or the blob-only legacy
    `__serviceUri`) for storage, `<NAME>__accountEndpoint` for Cosmos DB, with
    `<NAME>__credential=managedidentity` and `<NAME>__clientId` for a user-assigned identity.
    Precedence: there is none — setting both forms is refused, so what a deployment uses is
    never decided by which setting happens to win.
    """

    name: str
    connection_string: str | None = field(default=None, repr=False)
    endpoints: Mapping[str, str] = field(default_factory=dict)  # blob/queue/table/account → URI
    credential: str | None = None  # "managedidentity", or None for DefaultAzureCredential
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None and bool(self.endpoints)

    @property
    def configured(self) -> bool:
        return self.connection_string is not None or bool(self.endpoints)

    def endpoint(self, service: str) -> str | None:
        return self.endpoints.get(service)

    def describe(self, service: str) -> str:
        """What to set for this service, for error messages."""
        setting = "accountEndpoint" if service == "account" else f"{service}ServiceUri"
        return f"{self.name} (connection string) or {self.name}__{setting} (managed identity)"


def read_connection(
    reader: SettingReader, name: str, services: tuple[str, ...], on_azure: bool
) -> Connection:
    conn_string = reader.optional(name, secret=True)
    endpoints: dict[str, str] = {}
    for service in services:
        key = "accountEndpoint" if service == "account" else f"{service}ServiceUri"
        # The identity-based URI is what Azure deploys; it is "required" in the catalog sense.
        required = service in ("blob", "queue", "table", "account")
        if uri := reader.optional(f"{name}__{key}", required=required):
            endpoints[service] = uri
    if "blob" in services:
        if legacy := reader.optional(f"{name}__serviceUri"):
            endpoints.setdefault("blob", legacy)
        if account := reader.optional(f"{name}__accountName"):
            for service in services:
                endpoints.setdefault(service, f"https://{account}.{service}.core.windows.net")
    credential = reader.optional(f"{name}__credential")
    client_id = reader.optional(f"{name}__clientId")
    for service, uri in endpoints.items():
        parts = urlsplit(uri)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            reader.problems.append(f"{name}: {service} endpoint {uri!r} is not an https:// URL")
    if credential is not None and credential.lower() != "managedidentity":
        reader.problems.append(f"{name}__credential must be managedidentity, not {credential!r}")
    if conn_string and endpoints:
        reader.problems.append(
            f"{name} is set both as a connection string and as identity-based settings "
            f"({name}__…): keep one (on Azure, the identity-based ones)"
        )
    if conn_string and on_azure and _is_local_connection_string(conn_string):
        reader.problems.append(
            f"{name} points at a local emulator but this app runs in Azure: remove it and set "
            f"{name}__…ServiceUri / __accountEndpoint with __credential=managedidentity "
            "(infra/bicep sets them)"
        )
    return Connection(
        name=name,
        connection_string=conn_string,
        endpoints=endpoints,
        credential=credential.lower() if credential else None,
        client_id=client_id,
    )

"""Shared access signatures: the only way an app touches blob storage.

- Upload: create-only (`c`) on exactly one blob name the API chose, minutes long. Create-only
  means the URL cannot overwrite (not even its own blob), read, list or write any other name.
  It does not stop a server-side copy into that name (`x-ms-copy-source`), nor pin size or
  type, and Azurite lets concurrent PUTs through: ingest checks all that (pipeline.stores.uploads).
- Read: read-only (`r`) on one derived blob (thumbnail, published derivative, the original for
  its owner). An original is signed as a download (`Download`): the SAS overrides the
  response's Content-Type and Content-Disposition (`rsct`/`rscd`), whatever type the uploader
  stored. Expiry is rounded up to the next `ROUND_SECONDS`, so the same links come back for
  a while and a client polling with If-None-Match gets 304s with links still valid.

On Azure (managed identity, no account key) they are user-delegation SAS, signed with a key
the identity obtains from the storage account (cached until shortly before it expires). Against
Azurite, or wherever a connection string with an account key is configured, the account key
signs them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    UserDelegationKey,
    generate_blob_sas,
)

from pipeline.stores.connections import parse_connection_string

ROUND_SECONDS = 300
CLOCK_SKEW = timedelta(minutes=5)  # `st` in the past: clients' and Azure's clocks differ
DELEGATION_KEY_HOURS = 6


@dataclass(frozen=True)
class Download:
    """Response headers a read link forces: a safe type and `attachment` with a file name."""

    content_type: str
    file_name: str

    @property
    def disposition(self) -> str:
        return f'attachment; filename="{self.file_name}"'


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


class Signer:
    def __init__(self, blobs: BlobServiceClient, connection_string: str | None) -> None:
        self._blobs = blobs
        self._account_key = (
            parse_connection_string(connection_string).get("AccountKey")
            if connection_string
            else None
        )
        self._lock = threading.Lock()
        self._delegation: UserDelegationKey | None = None
        self._delegation_until = datetime.min.replace(tzinfo=UTC)

    def _key_args(self, expiry: datetime) -> dict:
        if self._account_key:
            return {"account_key": self._account_key}
        with self._lock:
            # The key must outlive every SAS it signs.
            if self._delegation is None or self._delegation_until < expiry + CLOCK_SKEW:
                now = datetime.now(UTC)
                until = now + timedelta(hours=DELEGATION_KEY_HOURS)
                self._delegation = self._blobs.get_user_delegation_key(now - CLOCK_SKEW, until)
                self._delegation_until = until
            return {"user_delegation_key": self._delegation}

    def _sign(
        self,
        container: str,
        name: str,
        permission: BlobSasPermissions,
        expiry: datetime,
        download: Download | None = None,
    ):
        overrides = (
            {"content_type": download.content_type, "content_disposition": download.disposition}
            if download
            else {}
        )
        token = generate_blob_sas(
            self._blobs.account_name,
            container,
            name,
            permission=permission,
            expiry=expiry,
            # No start time: valid at once whatever the client's clock says. HTTPS only
            # wherever the account is reached over HTTPS (everywhere but the emulator).
            protocol="https" if self._blobs.url.startswith("https:") else None,
            **overrides,
            **self._key_args(expiry),
        )
        url = self._blobs.get_blob_client(container, name).url
        return SignedUrl(f"{url}?{token}", expiry)

    def upload_url(self, container: str, name: str, minutes: int) -> SignedUrl:
        expiry = (datetime.now(UTC) + timedelta(minutes=minutes)).replace(microsecond=0)
        return self._sign(container, name, BlobSasPermissions(create=True), expiry)

    def read_url(
        self, container: str, name: str, minutes: int, download: Download | None = None
    ) -> SignedUrl:
        now = datetime.now(UTC).timestamp()
        rounded = (int(now) // ROUND_SECONDS + 1) * ROUND_SECONDS + minutes * 60
        expiry = datetime.fromtimestamp(rounded, UTC)
        return self._sign(container, name, BlobSasPermissions(read=True), expiry, download)

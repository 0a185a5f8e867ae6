"""A model step's ONNX file kept in Blob Storage: read once per process with the app's identity,
checked against its pinned SHA-256, cached on the instance's local disk.

A URL on the app's own storage account is read through the app's blob connection (its managed
identity on Azure, the emulator's connection locally); any other account with the app's
identity (`DefaultAzureCredential`: grant it Storage Blob Data Reader on that container). The
file is written under the temp folder (the app's own folder is read-only when run from a
package) as `<sha256>.onnx`, so a cached copy is valid by its name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.stores.azure_clients import AzureClients, default_credential

CACHE = Path(tempfile.gettempdir()) / "darkroom-models"
_lock = threading.Lock()


class ModelFileError(RuntimeError):
    """The model file cannot be read, or is not the one pinned."""


def _blob(azure: AzureClients, url: str):
    from azure.storage.blob import BlobClient

    own = azure.blob_service.url.rstrip("/")
    if url.startswith(own + "/"):
        container, _, name = unquote(url[len(own) + 1 :]).partition("/")
        return azure.blob_service.get_blob_client(container, name)
    return BlobClient.from_blob_url(url, credential=default_credential())


def fetch_model(azure: AzureClients, url: str, sha256: str) -> Path:
    """The local path of the pinned model file at `url`, downloaded on first use."""
    target = CACHE / f"{sha256}.onnx"
    with _lock:
        if target.is_file():
            return target
        CACHE.mkdir(parents=True, exist_ok=True)
        where = urlsplit(url)
        try:
            data = _blob(azure, url).download_blob().readall()
        except Exception as exc:  # the SDK's own errors: not found, 403, network
            raise ModelFileError(
                f"cannot read the model file {where.netloc}{where.path}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}"
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ModelFileError(
                f"the model file {where.path} has sha256 {actual}, not the pinned {sha256}"
            )
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)
        return target

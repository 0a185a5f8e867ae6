"""Test harness: real emulators on free ports, and isolated pipelines on top of them.

One emulator pair serves the whole session; each test gets its own resource prefix (queues,
containers, Cosmos container), so tests cannot see each other's images. A pipeline's functions
host is the real local host (`python -m pipeline host`) in a subprocess, with several workers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from azure.storage.blob import ContentSettings

from local.emulators import Emulator, start_emulators
from local.provision import ensure_resources
from pipeline.framework.contract import image_id
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.results import ResultsStore, is_settled

# Azurite's and the Cosmos emulator's published development keys (not secrets).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
COSMOS_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
SAMPLES = PROJECT_ROOT / "samples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_env(data_dir: Path) -> dict[str, str]:
    blob, queue, table, cosmos = (free_port() for _ in range(4))
    account = "devstoreaccount1"
    storage = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/{account};"
        f"QueueEndpoint=http://127.0.0.1:{queue}/{account};"
        f"TableEndpoint=http://127.0.0.1:{table}/{account};"
    )
    return {
        "DARKROOM_STORAGE": storage,
        "AzureWebJobsStorage": storage,
        "DARKROOM_COSMOS": f"AccountEndpoint=https://127.0.0.1:{cosmos}/;AccountKey={COSMOS_KEY};",
        "DARKROOM_DATA_DIR": str(data_dir),
    }


def isolated_env(base: dict[str, str], prefix: str, steps: str, **extra: str) -> dict[str, str]:
    """Settings for a pipeline whose queues, containers and Cosmos container carry `prefix`,
    so several pipelines share one pair of emulators without seeing each other's images."""
    return {
        **base,
        "PIPELINE_STEPS": steps,
        "DARKROOM_QUEUE_PREFIX": prefix,
        "DARKROOM_UPLOAD_CONTAINER": f"{prefix}uploads",
        "DARKROOM_DERIVED_CONTAINER": f"{prefix}derived",
        "DARKROOM_CLAIMS_CONTAINER": f"{prefix}claims",
        "DARKROOM_PUBLISHED_CONTAINER": f"{prefix}published",
        "DARKROOM_COSMOS_CONTAINER": f"images-{prefix.rstrip('-')}",
        "DARKROOM_FACES_CONTAINER": f"faces-{prefix.rstrip('-')}",
        "DARKROOM_PEOPLE_CONTAINER": f"people-{prefix.rstrip('-')}",
        "DARKROOM_HOST_PORT": str(free_port()),
        "DARKROOM_LIMITS_TABLE": "".join(c for c in prefix if c.isalnum()) + "limits",
        **extra,
    }


@contextmanager
def running_emulators(env: dict[str, str]) -> Iterator[list[Emulator]]:
    emulators = start_emulators(Settings.from_env(env))
    try:
        yield emulators
    finally:
        for emulator in reversed(emulators):
            emulator.stop()


@dataclass
class Pipeline:
    """One isolated pipeline: its settings, clients, and (once started) its functions host."""

    env: dict[str, str]
    host: subprocess.Popen | None = None
    host_log: Path | None = None
    settings: Settings = field(init=False)
    azure: AzureClients = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings.from_env(self.env)
        self.azure = AzureClients(self.settings)

    @property
    def results(self) -> ResultsStore:
        return ResultsStore(self.azure.images_container)

    def provision(self) -> Pipeline:
        ensure_resources(self.azure)
        return self

    # -- host ------------------------------------------------------------------------------
    def start_host(self, timeout: float = 90, healthy: bool = True) -> Pipeline:
        """Start the local host and wait until health answers: 200, or also 503 when the test
        means the deployment to be broken (`healthy=False`)."""
        data_dir = Path(self.env["DARKROOM_DATA_DIR"])
        self.host_log = data_dir / f"host-{self.settings.queue_prefix}log"
        self.host_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.host_log, "wb") as out:
            self.host = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "host"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            return self._wait_healthy(timeout, healthy)
        except BaseException:
            # A host that never became healthy must not outlive the caller: nothing would stop
            # it (a bench's baseline that could not start left one polling a stopped Azurite).
            self.stop_host()
            raise

    def _wait_healthy(self, timeout: float, healthy: bool) -> Pipeline:
        assert self.host is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.settings.host_port}/api/health"
        while time.monotonic() < deadline:
            if self.host.poll() is not None:
                raise RuntimeError(f"host exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError as error:
                if error.code == 503 and not healthy:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"host not healthy in {timeout}s:\n{self.log_tail()}")

    def stop_host(self) -> None:
        if self.host and self.host.poll() is None:
            self.host.send_signal(signal.SIGTERM)
            try:
                self.host.wait(60)
            except subprocess.TimeoutExpired:
                self.host.kill()
                self.host.wait()

    @property
    def host_key(self) -> str:
        """The stack's `blobs_extension` system key (the host creates it in the data folder)."""
        keys = json.loads((self.settings.data_dir / "host" / "keys.json").read_text())
        return keys["systemKeys"]["blobs_extension"]

    def webhook_url(self, path: str = "EventGrid", function: str = "ingest") -> str:
        """The host's Event Grid webhook for `function`, with the key a subscription carries."""
        return (
            f"http://127.0.0.1:{self.settings.host_port}/runtime/webhooks/{path}"
            f"?functionName={function}&code={self.host_key}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        return self.host_log.read_text(errors="replace")[-chars:] if self.host_log else ""

    # -- images ----------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, content_type: str = "image/jpeg") -> tuple[str, str]:
        """Upload to the upload container; returns (image id, etag)."""
        blob = self.azure.blob_service.get_blob_client(self.settings.upload_container, name)
        result = blob.upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )
        return image_id(self.settings.upload_container, name), result["etag"]

    def wait_final(self, image: str, etag: str | None = None, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.results.get(image)
            if is_settled(doc, etag):
                return doc
            time.sleep(0.2)
        raise AssertionError(
            f"{image} not final after {timeout}s; last: {json.dumps(doc)[:1500]}\n"
            f"host log:\n{self.log_tail()}"
        )

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run `python -m pipeline ARGS` against this pipeline, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def queue_messages(self, queue: str) -> list[bytes]:
        """Bodies of the messages waiting on a queue (peeked, base64-decoded)."""
        client = self.azure.queue_service.get_queue_client(queue)
        return [base64.b64decode(m.content) for m in client.peek_messages(max_messages=32)]

    def blob_names(self, container: str, prefix: str) -> list[str]:
        client = self.azure.blob_service.get_container_client(container)
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))

    def blob_bytes(self, container: str, name: str) -> bytes:
        client = self.azure.blob_service.get_blob_client(container, name)
        return client.download_blob().readall()


def eventually(check, timeout: float = 60, interval: float = 0.1):
    """Poll `check()` until it returns something truthy; return that, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")

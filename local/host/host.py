"""Run the function app locally: HTTP + Event Grid in this process, queue workers in others.

Queue work is CPU-bound image processing, so it runs in several worker processes (one per core by
default), each indexing function_app exactly as a Functions worker does. A worker that dies is
started again — the messages it held reappear after their lease, as they would on Azure.

Workers are told to stop with SIGTERM, never through shared multiprocessing primitives: a worker
killed while it held a shared lock or sat in a shared Condition would leave that primitive
inconsistent, and the host would hang on its next use (the usual `Event.set()` at shutdown).
A worker whose host is gone (its parent changed) drains and exits instead of running on.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

from local.host import keys
from local.host.api_keys import KeyWatcher, record_access
from local.host.event_grid import BlobEventSource
from local.host.functions import index_app, local_connection_string
from local.host.queue_listener import run_listeners
from local.host.server import start_server
from local.host.timers import start_timers
from local.host.webhooks import trigger_queue_functions
from pipeline.settings import STORAGE_CONNECTION, Settings, get_settings, queue_host_options
from pipeline.stores.azure_clients import clients

log = logging.getLogger("darkroom.host")
DRAIN_SECONDS = 60  # workers finish the messages they hold; `down` waits 90 s for the host


def azurite_blob_db(settings: Settings) -> Path:
    """Azurite's blob metadata, where local/emulators puts it (`--location <data>/azurite`): the
    event source reads names Azurite's listing cannot carry from it."""
    return settings.data_dir / "azurite" / "__azurite_db_blob__.json"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
    )
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Azurite answers a listing it cannot serialise with a plain-text 500, and the SDK warns
    # about the body on every such call; the event source steps over those (event_grid.py)
    # and says so once, by name.
    logging.getLogger("azure.storage.blob._shared.response_handlers").addFilter(
        lambda record: not record.getMessage().startswith("Unexpected return type")
    )


def worker_main(host_pid: int, log_level: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    configure_logging(log_level)
    settings = get_settings()
    index = index_app(settings)  # until it returns, SIGTERM simply ends the process: none held
    # From here SIGTERM means "drain". Only a flag in the handler: Event.set() in a handler can
    # deadlock against the same thread holding the Event's lock.
    asked: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: asked.append(True))
    stop = threading.Event()
    listeners = run_listeners(
        # the app's queue triggers, and the blob extension's queue of accepted Event Grid events
        index.queues + trigger_queue_functions(index, settings),
        local_connection_string(settings, STORAGE_CONNECTION),
        queue_host_options(),
        settings.host_lease_seconds,
        stop,
    )
    while not asked:
        if os.getppid() != host_pid:
            log.warning("host %d is gone: draining and exiting", host_pid)
            break
        time.sleep(0.2)
    stop.set()
    for listener in listeners:
        listener.join()


class LocalHost:
    def __init__(self, log_level: str = "INFO") -> None:
        self.settings = get_settings()
        self.log_level = log_level
        self.stop = threading.Event()
        self._mp = mp.get_context("spawn")
        self.workers: list[mp.Process] = []
        self.restarts = 0

    def _spawn(self, number: int) -> mp.Process:
        # As Bicep sets it on Azure (infra/bicep/modules/function-app.bicep): two malloc arenas
        # per worker, not one per thread that allocates; read by glibc when the worker starts.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        process = self._mp.Process(
            target=worker_main,
            args=(os.getpid(), self.log_level),
            name=f"worker-{number}",
            daemon=False,
        )
        process.start()
        return process

    def run(self) -> None:
        """Serve until `stop` is set; then drain workers and return."""
        settings = self.settings
        index = index_app(settings)
        server = start_server(index, settings, settings.host_port)
        record_access(settings)  # what `up` and `status` tell a person about the page
        key_watcher = KeyWatcher(settings)
        # The URL Azure gives a subscription, key included (never logged).
        base = f"http://127.0.0.1:{settings.host_port}/runtime/webhooks/blobs"
        code = keys.system_key(settings.data_dir)
        sources = []
        for fn in index.event_grid.values():
            container = clients().blob_service.get_container_client(fn.container)
            state = settings.data_dir / "host" / f"eventgrid-{fn.container}.json"
            webhook = f"{base}?functionName=Host.Functions.{fn.name}&code={code}"
            source = BlobEventSource(
                container, webhook, state, self.stop, azurite_db=azurite_blob_db(settings)
            )
            source.start()
            sources.append(source)
        # Timers run here, once per host (Azure holds a singleton lock for the same reason).
        start_timers(index.timers, self.stop)
        self.workers = [self._spawn(i) for i in range(max(1, settings.host_workers))]
        log.info(
            "host ready on http://127.0.0.1:%d with %d workers; functions: %s",
            settings.host_port,
            len(self.workers),
            ", ".join(
                [f.name for f in index.queues]
                + list(index.event_grid)
                + [f.name for f in index.http.values()]
            ),
        )
        # Poll rather than stop.wait(): `stop` is set from a signal handler on this thread, and
        # Event.wait holds the Event's lock at moments, which set() would then wait for forever.
        ticks = 0
        while not self.stop.is_set():
            time.sleep(0.25)
            ticks += 1
            if ticks % 4 == 0:  # keys added to the settings file work within a second
                try:
                    key_watcher.poll()
                except Exception:
                    log.exception("re-reading the API keys failed; the old ones stay")
            for i, process in enumerate(self.workers):
                if not process.is_alive() and not self.stop.is_set():
                    self.restarts += 1
                    log.warning("worker-%d exited (%s); starting it again", i, process.exitcode)
                    self.workers[i] = self._spawn(i)
        log.info("stopping: workers finish the messages they hold")
        for process in self.workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: take nothing new, finish what is held
        for source in sources:
            source.join(30)  # an event being delivered is answered before the server goes
        server.shutdown()
        deadline = time.monotonic() + DRAIN_SECONDS
        for process in self.workers:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.error("%s did not drain in %ds; killing it", process.name, DRAIN_SECONDS)
                process.kill()
                process.join(5)
        log.info("host stopped")

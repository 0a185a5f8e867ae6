"""Run the function app locally: HTTP + Event Grid in this process, queue workers in others.

Queue work is CPU-bound image processing, so it runs in several worker processes (one per core by
default), each indexing function_app exactly as a Functions worker does. A worker that dies is
started again — the messages it held reappear after their lease, as they would on Azure.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time

from pipeline.azure_clients import clients
from pipeline.localhost.event_grid import BlobEventSource
from pipeline.localhost.functions import index_app
from pipeline.localhost.queue_listener import run_listeners
from pipeline.localhost.webhooks import start_server
from pipeline.settings import get_settings, queue_host_options

log = logging.getLogger("darkroom.host")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
    )
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def worker_main(stop: mp.Event, log_level: str) -> None:
    configure_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    settings = get_settings()
    index = index_app(settings)
    local_stop = threading.Event()
    listeners = run_listeners(
        index.queues,
        settings.env["DARKROOM_STORAGE"],
        queue_host_options(),
        settings.host_lease_seconds,
        local_stop,
    )
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())
    while not local_stop.is_set() and not stop.wait(0.5):
        pass
    local_stop.set()
    for listener in listeners:
        listener.join()


class LocalHost:
    def __init__(self, log_level: str = "INFO") -> None:
        self.settings = get_settings()
        self.log_level = log_level
        self.stop = threading.Event()
        self._mp = mp.get_context("spawn")
        self._worker_stop = self._mp.Event()
        self.workers: list[mp.Process] = []

    def _spawn(self, number: int) -> mp.Process:
        process = self._mp.Process(
            target=worker_main,
            args=(self._worker_stop, self.log_level),
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
        base = f"http://127.0.0.1:{settings.host_port}/runtime/webhooks/EventGrid"
        sources = []
        for fn in index.event_grid.values():
            container = clients().blob_service.get_container_client(fn.container)
            state = settings.data_dir / "host" / f"eventgrid-{fn.container}.json"
            source = BlobEventSource(container, f"{base}?functionName={fn.name}", state, self.stop)
            source.start()
            sources.append(source)
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
        while not self.stop.wait(1.0):
            for i, process in enumerate(self.workers):
                if not process.is_alive():
                    log.warning("worker-%d exited (%s); starting it again", i, process.exitcode)
                    self.workers[i] = self._spawn(i)
        self._worker_stop.set()
        server.shutdown()
        deadline = time.monotonic() + 60
        for process in self.workers:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
        for source in sources:
            source.join(5)
        log.info("host stopped")

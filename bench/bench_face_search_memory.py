"""Memory of the local host while face searches by image arrive at once (issue 17, finding 8).

Run: `.venv/bin/python -m bench.bench_face_search_memory [--requests 12] [--side 7000]`.

Sends `--requests` concurrent `POST /api/faces/search` with a `--side`² PNG (a gradient: 49 MP in
under 1 MB, ~1 s and ~150 MB to decode) twice: all from one caller, then one from each of
`--requests` callers. The host's resident memory (the process that runs the HTTP API) is
sampled every 20 ms from /proc; reported: before, peak, and the answers' status codes. Run it
from a checkout of another commit to compare (the harness starts that checkout's host).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import secrets
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from tests.harness import Pipeline, emulator_env, isolated_env, running_emulators


def gradient_png(side: int) -> bytes:
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[:, :, 0] = (np.arange(side) % 256)[None, :]
    pixels[:, :, 1] = (np.arange(side) % 256)[:, None]
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def burst(base: str, keys: list[str], png: bytes, pid: int) -> dict:
    """One request per key, all at once; the host's RSS sampled meanwhile."""
    peak, done = [rss_mb(pid)], threading.Event()
    before = peak[0]

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.02)

    def search(key: str) -> requests.Response:
        headers = {"x-api-key": key, "Content-Type": "image/png"}
        return requests.post(f"{base}/api/faces/search", data=png, headers=headers, timeout=600)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(len(keys)) as pool:
        answers = list(pool.map(search, keys))
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    return {
        "rss_before_mb": round(before),
        "rss_peak_mb": round(max(peak)),
        "seconds": round(elapsed, 1),
        "answers": dict(Counter(a.status_code for a in answers)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--side", type=int, default=7000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-search-"))
    png = gradient_png(args.side)
    keys = ["drk_" + secrets.token_urlsafe(24) for _ in range(args.requests)]
    entries = ",".join(f"c{n}:{hashlib.sha256(k.encode()).hexdigest()}" for n, k in enumerate(keys))
    env = isolated_env(
        emulator_env(folder / "stack"),
        "bsearch-",
        "prepare,store",
        DARKROOM_API_KEYS=entries,
        DARKROOM_RATE_PER_MINUTE="100000",
        DARKROOM_RATE_BURST="100000",
    )
    report: dict = {"png_bytes": len(png), "megapixels": round(args.side**2 / 1e6, 1)}
    with running_emulators(env):
        pipeline = Pipeline(env).provision().start_host()
        try:
            base = f"http://127.0.0.1:{pipeline.settings.host_port}"
            pid = pipeline.host.pid
            report["one caller"] = burst(base, [keys[0]] * args.requests, png, pid)
            time.sleep(2)
            report["one request per caller"] = burst(base, keys, png, pid)
        finally:
            pipeline.stop_host()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

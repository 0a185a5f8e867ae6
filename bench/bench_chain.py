"""What the chain costs: the whole local stack vs. the same steps in-process, same images, one run.

Run: `.venv/bin/python -m bench.bench_chain [--images 30] [--megapixels 12] [--route …]`.

- **in-process**: the route's steps called one after the other on each image through
  `MemoryStepContext` (no storage, no queues, no Cosmos), in as many processes as the host has
  workers — the compute the chain cannot do without;
- **chain**: the same images uploaded to the local stack (Azurite, the Cosmos emulator, the local
  host with its workers), from the first upload to the last final document; meanwhile the CPU
  time of every process of the stack is read from /proc, so the core-seconds per image are
  split by process (host, workers, Azurite, Cosmos emulator, this bench), with each process's
  peak RSS (VmHWM: model loading included) and the workers' RSS sampled every 2 s (median,
  95th percentile, the last tenth's median: growth shows there, a passing peak does not);
- **steps**: each step's recorded `duration_ms` (and, where recorded, `cpu_ms`, `io_ms`,
  `wait_ms`) in the final documents, as medians, against the same step's in-process time;
- **imaging**: prepare and transform (`steps.X.run`, in this process) against libvips
  `thumbnail` producing the same outputs, interleaved on the same photos.

The ratio chain ÷ in-process says what orchestration costs on this machine; both figures are
measured in the same run because these machines are noisy. Photos are the repository's samples
enlarged to the requested size (Lanczos, JPEG q90), so every image is a real photo's content.
The script uses only APIs every version of the project has had (steps' `run`, Settings,
MemoryStepContext, the test harness), so the same file measures an older checkout:
`bench/before_after.py` runs it in a worktree of a baseline commit and here, in one run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import math
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.engine.context import MemoryStepContext
from pipeline.settings import Settings
from tests.harness import SAMPLES, Pipeline, emulator_env, free_port, running_emulators

ROUTE = "prepare,analyze,recognize,transform,store"
TICKS = os.sysconf("SC_CLK_TCK")


def make_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """`count` JPEGs of about `megapixels`, 4:3, from the samples (cycled: each sample is
    enlarged once, so a thousand photos cost what a few do)."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = round(width * 3 / 4)
    sources = sorted(SAMPLES.glob("*.jpg"))
    enlarged: dict[Path, bytes] = {}
    made = []
    for i in range(count):
        source = sources[i % len(sources)]
        if source not in enlarged:
            with Image.open(source) as image:
                big = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            big.save(out, "JPEG", quality=90)
            enlarged[source] = out.getvalue()
        path = folder / f"{i:04d}-{source.stem}.jpg"
        path.write_bytes(enlarged[source])
        made.append(path)
    return made


def available_route(route: str) -> str:
    """The route's steps this checkout has (an older one may lack a newer step)."""
    names = [n for n in route.split(",") if importlib.util.find_spec(f"steps.{n}") is not None]
    return ",".join(names)


# --------------------------------------------------------------------------------- in-process


def run_route(route: str, settings: Settings, name: str, data: bytes) -> tuple[dict, dict]:
    """One image through every step of the route in this process: (fields, ms per step)."""
    fields: dict = {}
    artifacts: dict = {}
    ms: dict[str, float] = {}
    for step in route.split(","):
        ctx = MemoryStepContext(settings, "bench", name, data, fields)
        ctx.artifacts = artifacts
        started = time.perf_counter()
        fields = {**fields, **importlib.import_module(f"steps.{step}").run(ctx)}
        ms[step] = (time.perf_counter() - started) * 1000
    return fields, ms


def _run_in_process(args: tuple[str, str]) -> dict[str, float]:
    route, path = args
    settings = Settings.from_env({"PIPELINE_STEPS": route})
    return run_route(route, settings, Path(path).name, Path(path).read_bytes())[1]


def in_process(route: str, files: list[Path], workers: int) -> dict[str, Any]:
    """Images per second with `workers` processes, after one warm-up image each (models load)."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_run_in_process, [(route, str(files[0]))] * workers))
        started = time.perf_counter()
        per_image = list(pool.map(_run_in_process, [(route, str(f)) for f in files]))
        elapsed = time.perf_counter() - started
    steps = {s: round(statistics.median(m[s] for m in per_image), 1) for s in per_image[0]}
    return {"img_s": round(len(files) / elapsed, 3), "step_ms": steps}


# --------------------------------------------------------------------------------- processes


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on), None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children() -> dict[int, int]:
    """pid → parent pid of every process on the machine."""
    stats = {int(e.name): _stat(int(e.name)) for e in Path("/proc").iterdir() if e.name.isdigit()}
    return {pid: int(fields[1]) for pid, fields in stats.items() if fields}


def descendants(root: int) -> list[int]:
    parents = _children()
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid]
        found += kids
        frontier += kids
    return found


def cpu_seconds(pid: int) -> float | None:
    if (fields := _stat(pid)) is None:
        return None
    # utime + stime, and cutime + cstime: short-lived children (an OCR binary per image in
    # older versions) count in the process that ran them.
    return sum(int(f) for f in fields[11:15]) / TICKS


def _memory_mb(pid: int, field: str = "VmHWM") -> float | None:
    """A memory figure of /proc/<pid>/status in MB: VmHWM (the peak) or VmRSS (now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def role(pid: int, host_pid: int | None) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if (fields := _stat(pid)) is None:
        return "gone"
    parent = int(fields[1])
    if pid == host_pid:
        return "host"
    if parent == host_pid:
        return "worker"
    lowered = command.lower()
    if "node" in lowered and ("objects_server" in lowered or "detector" in lowered):
        return "node detector"
    if "azurite" in lowered:
        return "azurite"
    if "cosmos" in lowered:
        return "cosmos emulator"
    return "other"


class ProcessMeter:
    """CPU seconds of this process and every descendant over a window, grouped by role; and
    the workers' resident memory every few seconds, so a peak (VmHWM: one moment when several
    deliveries held their images at once) can be told from growth (a leak)."""

    SAMPLE_SECONDS = 2.0

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.worker_rss: list[float] = []
        self._stop = threading.Event()

    def begin(self, host_pid: int | None = None) -> None:
        me = os.getpid()
        self.start = {p: c for p in [me, *descendants(me)] if (c := cpu_seconds(p)) is not None}
        self.begun = time.perf_counter()
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, args=(host_pid,), daemon=True)
        self._sampler.start()

    def _sample(self, host_pid: int | None) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            for pid in descendants(os.getpid()):
                if role(pid, host_pid) == "worker" and (mb := _memory_mb(pid, "VmRSS")):
                    self.worker_rss.append(mb)

    def _rss_summary(self) -> dict[str, float]:
        """Median, 95th percentile and last tenth's median of the workers' RSS samples."""
        samples = self.worker_rss
        if len(samples) < 10:
            return {}
        tail = samples[-max(1, len(samples) // 10) :]
        return {
            "median": round(statistics.median(samples), 1),
            "p95": round(statistics.quantiles(samples, n=20)[-1], 1),
            "last_tenth_median": round(statistics.median(tail), 1),
            "samples": len(samples),
        }

    def end(self, host_pid: int | None, images: int) -> dict[str, Any]:
        self._stop.set()
        self._sampler.join()
        me = os.getpid()
        elapsed = time.perf_counter() - self.begun
        cpu: dict[str, float] = {}
        peak: dict[str, float] = {}
        for pid in [me, *descendants(me)]:
            now = cpu_seconds(pid)
            if now is None:
                continue
            name = "bench (uploads, polling)" if pid == me else role(pid, host_pid)
            cpu[name] = cpu.get(name, 0.0) + now - self.start.get(pid, 0.0)
            if (mb := _memory_mb(pid)) is not None:
                peak[name] = max(peak.get(name, 0.0), mb)
        total = sum(cpu.values())
        return {
            "core_s_per_image": {k: round(v / images, 3) for k, v in sorted(cpu.items())},
            "core_s_per_image_total": round(total / images, 3),
            "cores_busy": round(total / elapsed, 2),
            "peak_rss_mb": dict(sorted(peak.items())),
            "worker_rss_mb_during": self._rss_summary(),
        }


# --------------------------------------------------------------------------------- the chain


def recorded_steps(docs: list[dict]) -> dict[str, dict[str, float]]:
    """Median of each timing a step recorded in the final documents."""
    out: dict[str, dict[str, float]] = {}
    for step in docs[0].get("steps", {}):
        records = [d["steps"][step] for d in docs if step in d.get("steps", {})]
        out[step] = {
            key: round(statistics.median(r[key] for r in records), 1)
            for key in ("duration_ms", "cpu_ms", "io_ms", "wait_ms")
            if all(r.get(key) is not None for r in records)
        }
    return out


def chain(env: dict, route: str, files: list[Path], workers: int) -> dict[str, Any]:
    pipeline = Pipeline(
        {
            **env,
            "PIPELINE_STEPS": route,
            "DARKROOM_HOST_WORKERS": str(workers),
            "DARKROOM_HOST_PORT": str(free_port()),
            "DARKROOM_QUEUE_PREFIX": "bench-",
            "DARKROOM_UPLOAD_CONTAINER": "bench-uploads",
            "DARKROOM_COSMOS_CONTAINER": "bench",
        }
    ).provision()
    pipeline.start_host()
    meter = ProcessMeter()
    try:
        for i in range(workers):  # models load in each worker
            warm = pipeline.upload(f"warm-up-{i}.jpg", files[i % len(files)].read_bytes())
            pipeline.wait_final(*warm, timeout=600)
        meter.begin(pipeline.host.pid if pipeline.host else None)
        started = time.perf_counter()
        pending = [pipeline.upload(f.name, f.read_bytes()) for f in files]
        docs = []
        for image, etag in pending:
            doc = pipeline.wait_final(image, etag, timeout=3600)
            assert doc["status"] == "done", json.dumps(doc)[:500]
            docs.append(doc)
        elapsed = time.perf_counter() - started
        processes = meter.end(pipeline.host.pid if pipeline.host else None, len(files))
        return {
            "img_s": round(len(files) / elapsed, 3),
            "recorded": recorded_steps(docs),
            **processes,
        }
    finally:
        pipeline.stop_host()


# --------------------------------------------------------------------------------- imaging


def vips_prepare(settings: Settings, data: bytes, analysis_size: tuple[int, int]) -> None:
    """libvips producing prepare's two images: the analysis JPEG (Q88) and its thumbnail."""
    import pyvips

    small = pyvips.Image.thumbnail_buffer(data, analysis_size[0], height=analysis_size[1])
    small = small.copy_memory()
    small.jpegsave_buffer(Q=88, keep=pyvips.enums.ForeignKeep.NONE)
    side = settings.thumbnail_side
    small.thumbnail_image(side, height=side).jpegsave_buffer(
        Q=82, keep=pyvips.enums.ForeignKeep.NONE
    )


def vips_transform(settings: Settings, data: bytes, publish_size: tuple[int, int]) -> None:
    """libvips producing transform's derivative (without the blur): optimised, interlaced."""
    import pyvips

    image = pyvips.Image.thumbnail_buffer(data, publish_size[0], height=publish_size[1])
    image.jpegsave_buffer(
        Q=settings.publish.quality,
        optimize_coding=True,
        interlace=True,
        keep=pyvips.enums.ForeignKeep.ICC,
    )


def _fit(size: tuple[int, int], side: int, pixels: int | None = None) -> tuple[int, int]:
    scale = min(1.0, side / max(size))
    if pixels:
        scale = min(scale, math.sqrt(pixels / (size[0] * size[1])))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def imaging(route: str, files: list[Path], rounds: int) -> dict[str, Any]:
    """prepare and transform against libvips on the same photos, interleaved, in this process."""
    import pyvips

    pyvips.cache_set_max(0)
    settings = Settings.from_env({"PIPELINE_STEPS": route})
    photos = []
    for path in files:
        data = path.read_bytes()
        upto = route.split(",")[: route.split(",").index("transform")]
        fields, _ = run_route(",".join(upto), settings, path.name, data)
        size = (fields["image"]["width"], fields["image"]["height"])
        analysis = _fit(size, settings.analysis_max_side, settings.analysis_max_pixels)
        photos.append((path.name, data, fields, analysis, _fit(size, settings.publish.max_side)))
    prepare = importlib.import_module("steps.prepare")
    transform = importlib.import_module("steps.transform")
    candidates = {
        "prepare": lambda p: prepare.run(MemoryStepContext(settings, "b", p[0], p[1])),
        "transform": lambda p: transform.run(MemoryStepContext(settings, "b", p[0], p[1], p[2])),
        "vips_prepare": lambda p: vips_prepare(settings, p[1], p[3]),
        "vips_transform": lambda p: vips_transform(settings, p[1], p[4]),
    }
    names = list(candidates)
    for name in names:
        candidates[name](photos[0])  # warm-up
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for i, photo in enumerate(photos):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                candidates[name](photo)
                times[name].append((time.perf_counter() - started) * 1000)
    ms = {n: round(statistics.median(v), 1) for n, v in times.items()}
    return {
        "ms": ms,
        "prepare_over_vips": round(ms["prepare"] / ms["vips_prepare"], 2),
        "transform_over_vips": round(ms["transform"] / ms["vips_transform"], 2),
    }


def scaling(route: str, counts: list[int], args: argparse.Namespace) -> int:
    """Chain throughput for each batch size in turn on one stack; ratios to the first."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        files = make_photos(folder, max(counts), args.megapixels)
        env = emulator_env(Path(scratch) / "stack")
        batches = []
        with running_emulators(env):
            for number, count in enumerate(counts):
                batch = Path(scratch) / f"batch-{number}"
                batch.mkdir()
                named = []
                for f in files[:count]:  # new names: every batch is new uploads
                    named.append(batch / f"b{number}-{f.name}")
                    named[-1].write_bytes(f.read_bytes())
                result = chain(env, route, named, args.workers)
                batches.append({"images": count, **result})
                print(json.dumps({"images": count, "img_s": result["img_s"]}), flush=True)
    first = batches[0]["img_s"]
    print(
        json.dumps(
            {
                "route": route,
                "megapixels": args.megapixels,
                "batches": batches,
                "img_s_over_first": [round(b["img_s"] / first, 3) for b in batches],
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--route", default=ROUTE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--imaging-photos", type=int, default=4, help="0: skip the libvips part")
    parser.add_argument("--imaging-rounds", type=int, default=3)
    parser.add_argument("--no-chain", action="store_true", help="in-process and imaging only")
    parser.add_argument(
        "--counts",
        help="e.g. 20,100,1000: the chain alone on batches of these sizes, one after the other "
        "on the same stack (whose documents and blobs accumulate, as in use): is it flat?",
    )
    args = parser.parse_args(argv)
    route = available_route(args.route)
    if args.counts:
        return scaling(route, [int(n) for n in args.counts.split(",")], args)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        files = make_photos(folder, args.images, args.megapixels)
        size = Image.open(files[0]).size
        result: dict[str, Any] = {
            "images": args.images,
            "size": f"{size[0]}x{size[1]}",
            "route": route,
            "workers": args.workers,
            "load_avg_at_start": os.getloadavg(),
        }
        alone = in_process(route, files, args.workers)
        result["in_process"] = alone
        if not args.no_chain:
            env = emulator_env(Path(scratch) / "stack")
            with running_emulators(env):
                chained = chain(env, route, files, args.workers)
            result["chain"] = chained
            result["chain_over_in_process"] = round(chained["img_s"] / alone["img_s"], 3)
        if args.imaging_photos:
            result["imaging"] = imaging(route, files[: args.imaging_photos], args.imaging_rounds)
        result["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

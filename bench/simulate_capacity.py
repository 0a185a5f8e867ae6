"""Past one machine: Darkroom on Flex Consumption, simulated one second at a time for a day.

Run: `.venv/bin/python -m bench.simulate_capacity [--profile 50M] [--cosmos autoscale] …`
(`--help` lists every knob; `--json` prints the whole result).

What is simulated, per second, for each function of the route (ingest, then one queue and one
function per step: Flex scales every queue-triggered function on its own instances):

- uploads: the profile's monthly volume spread over a day with a diurnal curve (peak in the
  afternoon, trough at night), per-minute noise, and bursts (an album or a bulk import: N
  images in S seconds), Poisson arrivals, deterministic for a seed;
- each function's instances (2,048 MB = 1 core by default): target-based scaling (desired =
  ⌈(queued + in flight) / batchSize⌉, at most `--scale-step` new instances per
  `--scale-interval`, ready after `--cold-start` seconds, scale in after `--scale-in-delay`
  idle seconds, to zero), capped by maximumInstanceCount and the region's core quota;
- an instance runs up to batchSize + newBatchThreshold messages at once and shares its cores
  among them (processor sharing): CPU seconds per message from the benches (docs/
  benchmarks.md) or flags, plus I/O wait;
- the shared limits every message spends against: Storage requests per second (per account)
  and messages per second (per queue), the Cosmos DB RU/s of the images container and of the
  faces containers (serverless: 5,000 RU/s each; autoscale: up to `--cosmos-max-rus`), Event
  Grid, blob bandwidth. A limit that is reached slows every function that needs it that
  second (throttled calls are retried), which is how the real services push back.

Per-image service costs (RU, messages, storage requests, blob bytes, blobs created) come from
`bench/results/capacity-costs.json`, which `bench/measure_ru.py` writes from a real run of the
local stack; without it, the constants below (their sources in the comments) are used.

It prints the day's figures: uploads and completions, the limit that saturates first and for
how long each one bound, the peak use of every limit, the backlog, end-to-end latency
percentiles, instances over the day, and the month's cost per 1,000 images. The cost model's
list prices (USD, East US, pay-as-you-go, as published in 2025; see docs/capacity.md) are
flags too.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

STEPS = ("ingest", "prepare", "analyze", "recognize", "transform", "store")
DAY = 86_400
COSTS_JSON = Path(__file__).with_name("results") / "capacity-costs.json"

# Core-seconds per message on one Flex core, in process, 12 MP photo, all five analyzers:
# docs/benchmarks.md (bench_imaging: prepare 115.7 ms, transform 278.7 ms at 12 MP;
# bench_analyzers: the analyze step 545.5 ms from the 2 MP analysis JPEG). ingest reads
# metadata only and store writes JSON: 20 ms each (assumed; store measured 22 ms median wall
# under load by measure_ru). recognize: 5 ms without faces plus the embedder's align + embed
# per face (DESIGN.md: dlib ResNet ~70 ms/face).
CPU_S = {
    "ingest": 0.020,
    "prepare": 0.116,
    "analyze": 0.546,
    "recognize": 0.005,
    "transform": 0.279,
    "store": 0.020,
}
EMBED_S_PER_FACE = 0.070
OVERHEAD_CPU_S = 0.050  # per message: SDK calls, JSON, validation (DESIGN.md: host ~0.06/image)
IO_S = 0.100  # per message: ~10 storage / Cosmos round trips in-region (assumed)


@dataclass
class Costs:
    """What one image costs the shared services (per image)."""

    faces_per_image: float = 0.2
    ru_images: float = 59.1  # RU in the images container (measure_ru, 2026-12-01)
    ru_per_face: float = 32.2  # faces upsert + vector queries (faces, people)
    queue_requests: float = 17.8  # put + delete per message, gets that received, updates
    blob_requests: float = 11.2  # puts (upload + 4 derived), gets, property reads
    table_requests: float = 1.0  # the face matcher's lease (API table)
    queue_messages: float = 7.0  # ingest + 5 steps + completion event
    blobs_created: float = 5.0  # upload, analysis, thumbnail, published, result archive
    blob_bytes_read: float = 2.7e6  # the original twice (prepare, transform) + analysis image
    upload_bytes: float = 1.17e6  # 12 MP JPEG q90 from the samples
    derived_bytes: float = 0.68e6
    document_kb: float = 2.1
    completion_event_kb: float = 1.9
    source: str = "built-in constants (bench/simulate_capacity.py)"

    @property
    def storage_requests(self) -> float:
        return self.queue_requests + self.blob_requests + self.table_requests

    @property
    def blob_bytes_written(self) -> float:
        return self.upload_bytes + self.derived_bytes

    @classmethod
    def from_measurement(cls, path: Path, faces_per_image: float | None = None) -> Costs:
        m = json.loads(path.read_text())
        per = m["per_image"]
        ru = per["ru_estimate"]
        face_keys = [k for k in ru if k.split(":")[1] in ("faces", "people")]
        measured_faces = m.get("faces_per_image_mean") or 0.0
        face_ru = sum(ru[k] for k in face_keys)
        per_face = face_ru / measured_faces if measured_faces else cls.ru_per_face
        # Local artefacts left out: the event source's listings (Event Grid pushes on Azure)
        # and its packing of events into the ingest queue (one message per upload on Azure).
        by_queue = per["queue_messages_sent_by_queue"]
        ingest_local = sum(v for q, v in by_queue.items() if "ingest" in q)
        messages = per["queue_messages_sent"] - ingest_local + 1.0
        gets = m["queue_gets_in_run"].get("with_messages", 0) / m["images"]
        blob = sum(v for k, v in per["blob_ops"].items() if k != "list") + 1.0  # + the upload
        return cls(
            faces_per_image=measured_faces if faces_per_image is None else faces_per_image,
            ru_images=sum(v for k, v in ru.items() if k not in face_keys),
            ru_per_face=per_face,
            queue_requests=messages * 2 + gets + per["queue_ops"].get("update", 0.0),
            blob_requests=blob,
            table_requests=sum(per.get("table_ops", {}).values()),
            queue_messages=messages,
            blobs_created=sum(per["blob_writes_by_container"].values()) + 1.0,
            blob_bytes_read=per["blob_bytes_read"],
            upload_bytes=m["client_upload"]["bytes"],
            derived_bytes=per["blob_bytes_written"],
            document_kb=per["image_document_bytes"]["mean"] / 1024,
            completion_event_kb=per["queue_message_bytes"] / 1024,
            source=f"{path.name} ({m['command']}, commit {m['commit']}, {m['measured_at']})",
        )


@dataclass
class Profile:
    name: str
    images_per_month: float
    bursts_per_day: float
    burst_images: int
    burst_seconds: int


PROFILES = {
    # a small team: a few albums a day
    "5k": Profile("5k", 5_000, 2, 50, 60),
    # a product with users: imports of a thousand photos now and then
    "500k": Profile("500k", 500_000, 4, 1_000, 120),
    # a platform: partner bulk imports on top of the daily curve
    "50M": Profile("50M", 50_000_000, 6, 30_000, 300),
}


@dataclass
class Config:
    cores: float = 1.0  # 2,048 MB instances (flex-consumption-plan: 512 → 0.25, 4,096 → 2)
    memory_mb: int = 2048
    batch_size: int = 4  # host.json
    new_batch_threshold: int = 2  # host.json
    max_instances: int = 100  # infra/bicep maximumInstanceCount (app-wide here: conservative)
    quota_cores: float = 250.0  # default regional Flex quota per subscription
    scale_interval: float = 5.0
    scale_step: int = 4  # target-based scaling adds up to 4 instances at a time
    scale_in_delay: float = 60.0
    cold_start: float = 10.0
    poll_interval: float = 2.0  # host.json maxPollingInterval
    worker_base_mb: float = 671.0  # one worker with every model loaded (benchmarks.md)
    job_mb: float = 55.0  # transform's 12 MP peak above the worker (benchmarks.md)
    storage_rps: float = 20_000.0  # per storage account
    queue_mps: float = 2_000.0  # per queue (1 KiB messages)
    storage_accounts: int = 1  # queues and blobs spread over this many accounts
    queue_partitions: int = 1  # each step's queue split into this many queues
    cosmos: str = "serverless"  # serverless | autoscale | manual
    cosmos_max_rus: float = 5_000.0  # per container (serverless: 5,000)
    egress_gbps: float = 50.0
    ingress_gbps: float = 25.0
    events_topic_eps: float = 5_000.0  # custom topic publish: 5,000 events/s or 1 MB/s
    events_topic_mbps: float = 1.0
    eventgrid_latency: float = 0.5
    hop_latency: float = 0.05
    cpu_s: dict = field(default_factory=lambda: dict(CPU_S))
    embed_s_per_face: float = EMBED_S_PER_FACE
    overhead_cpu_s: float = OVERHEAD_CPU_S
    io_s: float = IO_S

    @property
    def concurrency(self) -> int:
        return self.batch_size + self.new_batch_threshold

    def cpu(self, step: str, costs: Costs) -> float:
        extra = self.embed_s_per_face * costs.faces_per_image if step == "recognize" else 0.0
        return self.cpu_s[step] + extra + self.overhead_cpu_s


@dataclass
class Prices:
    """USD list prices (East US, pay-as-you-go, 2025); see docs/capacity.md for the sources."""

    gb_s: float = 0.000026  # Flex on-demand execution time
    per_million_executions: float = 0.40
    free_gb_s: float = 100_000
    free_executions: float = 250_000
    serverless_per_million_ru: float = 0.25
    autoscale_per_100_rus_hour: float = 0.012  # 1.5 x the manual $0.008
    manual_per_100_rus_hour: float = 0.008
    cosmos_gb_month: float = 0.25
    queue_per_10k: float = 0.004
    blob_write_per_10k: float = 0.065
    blob_read_per_10k: float = 0.005
    blob_gb_month: float = 0.0184  # hot LRS
    eventgrid_per_million: float = 0.60
    eventgrid_free: float = 100_000
    originals_days: float = 30  # DARKROOM_RETAIN_ORIGINALS_DAYS
    derived_days: float = 365  # DARKROOM_RETAIN_DERIVED_DAYS


class Stage:
    """One function's queue and its instances. Messages wait in `pending` (a heap on the time
    they become visible) until they are due, then in `ready` (FIFO) until an instance takes
    them; each entry is a cohort [uploaded_at, count] of images that moved together."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list = []  # heap of (visible_at, seq, uploaded_at, count)
        self.ready: deque = deque()  # [uploaded_at, count]
        self.ready_count = 0
        self.queued = 0  # pending + ready: the queue's approximate message count
        self.seq = 0
        self.instances: list[float] = []  # when each instance is ready to work
        self.credit = 0.0
        self.rate = 0.0  # messages/s, smoothed
        self.over_since: float | None = None
        self.in_flight = 0.0
        self.peak_instances = 0
        self.instance_seconds = 0.0
        self.active_seconds = 0.0

    def ready_instances(self, now: float) -> int:
        return sum(1 for r in self.instances if r <= now)

    def push(self, visible_at: float, uploaded_at: float, count: int) -> None:
        if count:
            self.seq += 1
            heapq.heappush(self.pending, (visible_at, self.seq, uploaded_at, count))
            self.queued += count

    def due(self, now: float) -> int:
        """Move what became visible by `now` to the ready line; returns the ready count."""
        while self.pending and self.pending[0][0] <= now:
            _, _, uploaded_at, count = heapq.heappop(self.pending)
            self.ready.append([uploaded_at, count])
            self.ready_count += count
        return self.ready_count

    def pop(self, count: int) -> list[tuple[float, int]]:
        """Up to `count` ready messages, oldest first (a queue is FIFO enough for this)."""
        out, taken = [], 0
        while self.ready and taken < count:
            cohort = self.ready[0]
            n = min(cohort[1], count - taken)
            out.append((cohort[0], n))
            taken += n
            cohort[1] -= n
            if cohort[1] == 0:
                self.ready.popleft()
        self.ready_count -= taken
        self.queued -= taken
        return out


def upload_rates(profile: Profile, rng: random.Random, seconds: int) -> list[float]:
    """Expected uploads per second: diurnal curve times per-minute noise, plus the bursts."""
    mean = profile.images_per_month / 30 / DAY
    minute_noise = [rng.lognormvariate(-0.045, 0.3) for _ in range(seconds // 60 + 1)]
    rates = []
    for t in range(seconds):
        hour = (t % DAY) / 3600
        diurnal = 1 + 0.8 * math.cos(2 * math.pi * (hour - 15) / 24)  # 0.2 at 3:00, 1.8 at 15:00
        rates.append(mean * diurnal * minute_noise[t // 60])
    days = seconds / DAY
    # bursts take their images out of the day's volume, so the month's total is unchanged
    bursts = [
        rng.uniform(0, seconds - profile.burst_seconds)
        for _ in range(round(profile.bursts_per_day * days))
    ]
    burst_total = len(bursts) * profile.burst_images
    scale = max(0.0, 1 - burst_total / max(1.0, sum(rates)))
    rates = [r * scale for r in rates]
    for start in bursts:
        for t in range(int(start), int(start) + profile.burst_seconds):
            rates[t] += profile.burst_images / profile.burst_seconds
    return rates


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def percentile(samples: list[tuple[float, int]], q: float) -> float | None:
    total = sum(n for _, n in samples)
    if not total:
        return None
    seen, target = 0, q * total
    for value, n in samples:
        seen += n
        if seen >= target:
            return value
    return samples[-1][0]


SHARED_LIMITS = (
    "instance cap (quota / maximumInstanceCount)",
    "storage account requests/s",
    "queue messages/s",
    "cosmos images RU/s",
    "cosmos faces RU/s",
)


def simulate(
    profile: Profile,
    costs: Costs,
    config: Config,
    seed: int = 1,
    seconds: int = DAY,
    rates: list[float] | None = None,
) -> dict:
    rng = random.Random(seed)
    rates = rates if rates is not None else upload_rates(profile, rng, seconds)
    stages = [Stage(s) for s in STEPS]
    recognize = STEPS.index("recognize")
    per_msg_storage = costs.storage_requests / len(STEPS)
    ru_images_msg = costs.ru_images / len(STEPS)
    ru_faces_msg = costs.ru_per_face * costs.faces_per_image  # on recognize only
    account_rps = config.storage_rps * config.storage_accounts
    queue_mps = config.queue_mps * config.queue_partitions
    cap = min(config.max_instances, int(config.quota_cores / config.cores))
    fits = config.worker_base_mb + config.concurrency * config.job_mb <= config.memory_mb
    uploaded = done = executions = 0
    latencies: list[tuple[float, int]] = []
    bound: dict[str, int] = {}
    first_bound: dict[str, float] = {}
    peak = dict.fromkeys(
        ("instances", "storage account", "queue (busiest)", "cosmos images", "cosmos faces"), 0.0
    )
    peak.update(dict.fromkeys(("egress", "ingress", "events topic"), 0.0))
    peak_rate = {"uploads/s": 0.0, "eventgrid ingress events/s": 0.0, "RU/s": 0.0}
    peak_rate["storage requests/s"] = 0.0
    backlog_max = backlog_seconds = backlog_big = 0
    hourly: list[dict] = []
    hour = {"uploads": 0, "done": 0, "backlog_max": 0, "instances_max": 0, "lat": []}
    ru_hours: list[tuple[float, float]] = []
    hour_img = hour_face = 0.0
    ru_used = polls = 0.0

    for t in range(seconds):
        now = float(t)
        arrivals = poisson(rng, rates[t])
        uploaded += arrivals
        hour["uploads"] += arrivals
        stages[0].push(now + config.eventgrid_latency, now, arrivals)
        peak_rate["uploads/s"] = max(peak_rate["uploads/s"], arrivals)

        # what each function could take this second on its ready instances
        avail, ready, cpu_cap, want = [], [], [], []
        for stage in stages:
            a = stage.due(now)
            r = stage.ready_instances(now) if fits else 0
            c = r * config.cores / config.cpu(stage.name, costs)
            avail.append(a)
            ready.append(r)
            cpu_cap.append(c)
            want.append(min(a, c + stage.credit, queue_mps))
        instances = sum(len(s.instances) for s in stages)
        poll = instances / config.poll_interval
        storage_need = sum(want) * per_msg_storage + poll
        ru_img_need = sum(want) * ru_images_msg
        ru_face_need = want[recognize] * ru_faces_msg
        f_storage = min(1.0, account_rps / storage_need) if storage_need else 1.0
        f_img = min(1.0, config.cosmos_max_rus / ru_img_need) if ru_img_need else 1.0
        f_face = min(1.0, config.cosmos_max_rus / ru_face_need) if ru_face_need else 1.0
        peak["storage account"] = max(peak["storage account"], storage_need / account_rps)
        peak["cosmos images"] = max(peak["cosmos images"], ru_img_need / config.cosmos_max_rus)
        peak["cosmos faces"] = max(peak["cosmos faces"], ru_face_need / config.cosmos_max_rus)
        peak_rate["storage requests/s"] = max(peak_rate["storage requests/s"], storage_need)
        polls += poll

        moved = ru_img = ru_face = 0.0
        for i, stage in enumerate(stages):
            throttle = min(f_storage, f_img, f_face if i == recognize else 1.0)
            amount = want[i] * throttle
            count = int(amount)
            stage.credit = amount - count
            if avail[i] > count:  # work left waiting this second: which limit held it
                if ready[i] == 0:
                    held = "cold start (no instance ready)"
                elif throttle < 1.0 and amount < min(cpu_cap[i], queue_mps):
                    if throttle == f_storage:
                        held = "storage account requests/s"
                    elif throttle == f_img:
                        held = "cosmos images RU/s"
                    else:
                        held = "cosmos faces RU/s"
                elif queue_mps <= cpu_cap[i]:
                    held = "queue messages/s"
                elif instances >= cap:
                    held = "instance cap (quota / maximumInstanceCount)"
                else:
                    held = "scale-out lag (instances still coming)"
                bound[held] = bound.get(held, 0) + 1
                first_bound.setdefault(held, now)
            peak["queue (busiest)"] = max(peak["queue (busiest)"], count / queue_mps)
            # processor sharing: a message's service time grows with the messages it shares
            # the cores with (M/M/1-PS: 1 / (1 - u) of them on average; at most the batch)
            stage.rate = 0.9 * stage.rate + 0.1 * count
            u = stage.rate / cpu_cap[i] if cpu_cap[i] else 1.0
            k = config.concurrency if u >= 0.999 else min(config.concurrency, 1 / (1 - u))
            service = config.cpu(stage.name, costs) * max(1.0, k / config.cores) + config.io_s
            stage.in_flight = count * service
            # billed while executing: the cores' busy time, or the batches in flight
            busy = max(
                count * config.cpu(stage.name, costs) / config.cores,
                stage.in_flight / config.concurrency,
            )
            stage.active_seconds += min(ready[i], math.ceil(busy))
            stage.instance_seconds += len(stage.instances)
            executions += count
            moved += count
            ru_img += count * ru_images_msg
            ru_face += count * ru_faces_msg if i == recognize else 0.0
            for uploaded_at, n in stage.pop(count):
                if i + 1 < len(stages):
                    stages[i + 1].push(now + service + config.hop_latency, uploaded_at, n)
                else:
                    done += n
                    hour["done"] += n
                    latencies.append((now + service - uploaded_at, n))
                    hour["lat"].append((now + service - uploaded_at, n))
        ru_used += ru_img + ru_face
        hour_img, hour_face = max(hour_img, ru_img), max(hour_face, ru_face)
        peak_rate["RU/s"] = max(peak_rate["RU/s"], ru_img + ru_face)
        images_s = moved / len(STEPS)  # images a second moving through the chain
        peak["egress"] = max(
            peak["egress"], images_s * costs.blob_bytes_read * 8 / 1e9 / config.egress_gbps
        )
        peak["ingress"] = max(
            peak["ingress"], images_s * costs.blob_bytes_written * 8 / 1e9 / config.ingress_gbps
        )
        peak_rate["eventgrid ingress events/s"] = max(
            peak_rate["eventgrid ingress events/s"], images_s * costs.blobs_created
        )
        finished = want[-1]
        peak["events topic"] = max(
            peak["events topic"],
            finished / config.events_topic_eps,
            finished * costs.completion_event_kb / 1024 / config.events_topic_mbps,
        )
        peak["instances"] = max(peak["instances"], instances / cap)

        backlog = sum(s.ready_count for s in stages)
        backlog_max = max(backlog_max, backlog)
        backlog_seconds += backlog > 0
        backlog_big += backlog > 1000
        hour["backlog_max"] = max(hour["backlog_max"], backlog)
        hour["instances_max"] = max(hour["instances_max"], instances)
        if t % max(1, int(config.scale_interval)) == 0:
            scale(stages, config, now, cap)
        if (t + 1) % 3600 == 0 or t + 1 == seconds:
            lat = sorted(hour.pop("lat"))
            hour["p95_s"] = percentile(lat, 0.95)
            hourly.append(hour)
            hour = {"uploads": 0, "done": 0, "backlog_max": 0, "instances_max": 0, "lat": []}
            ru_hours.append((hour_img, hour_face))
            hour_img = hour_face = 0.0

    latencies.sort()
    shared = {k: v for k, v in first_bound.items() if k in SHARED_LIMITS}
    return {
        "profile": asdict(profile),
        "seed": seed,
        "seconds": seconds,
        "fits_in_memory": fits,
        "uploaded": uploaded,
        "done": done,
        "in_queues": sum(s.queued for s in stages),
        "backlog_max": backlog_max,
        "backlog_seconds": backlog_seconds,
        "backlog_over_1000_seconds": backlog_big,
        "latency_s": {f"p{q}": percentile(latencies, q / 100) for q in (50, 90, 95, 99)}
        | {"max": latencies[-1][0] if latencies else None},
        "saturated_first": min(shared, key=shared.get) if shared else None,
        "first_bound_at_s": first_bound,
        "seconds_bound": bound,
        "peak_use": peak,
        "peak_rates": peak_rate,
        "peak_instances": {s.name: s.peak_instances for s in stages},
        "instance_cap": cap,
        "active_instance_seconds": {s.name: s.active_seconds for s in stages},
        "instance_seconds": {s.name: s.instance_seconds for s in stages},
        "executions": executions,
        "ru_used": ru_used,
        "ru_hour_peaks": ru_hours,
        "polls": polls,
        "hourly": hourly,
    }


def scale(stages: list[Stage], config: Config, now: float, cap: int) -> None:
    """Target-based scaling, one decision for every function: desired = ⌈length / batchSize⌉,
    where the queue length counts messages in flight (invisible messages count on Storage)."""
    wanted = {}
    for stage in stages:
        # visible messages and the ones being processed; messages still being worked on by the
        # step before are not in this queue yet
        length = stage.ready_count + stage.in_flight
        desired = math.ceil(length / config.batch_size)
        current = len(stage.instances)
        if desired < current:
            stage.over_since = now if stage.over_since is None else stage.over_since
            if now - stage.over_since >= config.scale_in_delay:
                stage.instances = sorted(stage.instances)[:desired]
                stage.over_since = None
        else:
            stage.over_since = None
        wanted[stage.name] = max(0, min(desired - len(stage.instances), config.scale_step))
    room = cap - sum(len(s.instances) for s in stages)
    total = sum(wanted.values())
    if total > room:  # the quota is shared: each function gets its share of what is left
        shares = {k: (v * room) // total if room > 0 else 0 for k, v in wanted.items()}
        left = max(0, room) - sum(shares.values())
        for name in sorted(wanted, key=lambda k: -wanted[k]):
            if left <= 0:
                break
            if shares[name] < wanted[name]:
                shares[name] += 1
                left -= 1
        wanted = shares
    for stage in stages:
        stage.instances.extend([now + config.cold_start] * wanted[stage.name])
        stage.peak_instances = max(stage.peak_instances, len(stage.instances))


def monthly_cost(result: dict, costs: Costs, config: Config, prices: Prices) -> dict:
    """The month's bill from the simulated day (times 30), per line, and per 1,000 images."""
    days = 30 * DAY / result["seconds"]
    images = result["profile"]["images_per_month"]
    gb_s = sum(result["active_instance_seconds"].values()) * config.memory_mb / 1024 * days
    executions = result["executions"] * days
    compute = max(0.0, gb_s - prices.free_gb_s) * prices.gb_s
    execs = max(0.0, executions - prices.free_executions) / 1e6 * prices.per_million_executions
    ru_month = result["ru_used"] * days
    if config.cosmos == "serverless":
        cosmos = ru_month / 1e6 * prices.serverless_per_million_ru
    else:
        # three containers with their own throughput: images, and faces + people (the faces
        # step's RU split over the two); autoscale bills each hour's highest RU/s, never
        # below a tenth of the maximum; manual bills the maximum every hour
        top = config.cosmos_max_rus
        hours = result["ru_hour_peaks"]
        if config.cosmos == "autoscale":
            rus = sum(max(0.1 * top, img) + 2 * max(0.1 * top, face / 2) for img, face in hours)
            rate = prices.autoscale_per_100_rus_hour
        else:
            rus = 3 * top * len(hours)
            rate = prices.manual_per_100_rus_hour
        cosmos = rus / 100 * rate * days
    documents_gb = images * 12 * costs.document_kb / 1024**2  # a year of documents kept
    lines = {
        "flex_compute": compute,
        "flex_executions": execs,
        "cosmos_throughput": cosmos,
        "cosmos_storage_after_a_year": documents_gb * prices.cosmos_gb_month,
        "queue_and_table_transactions": (
            images * (costs.queue_requests + costs.table_requests) + result["polls"] * days
        )
        / 1e4
        * prices.queue_per_10k,
        "blob_transactions": images
        * (
            costs.blobs_created * prices.blob_write_per_10k
            + (costs.blob_requests - costs.blobs_created) * prices.blob_read_per_10k
        )
        / 1e4,
        "event_grid": max(0.0, images * (costs.blobs_created + 1) - prices.eventgrid_free)
        / 1e6
        * prices.eventgrid_per_million,
        "blob_capacity_steady_state": (
            images * costs.upload_bytes / 1e9 * prices.originals_days / 30
            + images * costs.derived_bytes / 1e9 * min(12, prices.derived_days / 30)
        )
        * prices.blob_gb_month,
    }
    total = sum(lines.values())
    kept = lines["blob_capacity_steady_state"] + lines["cosmos_storage_after_a_year"]
    # what 1,000 images cost to keep over their whole retention (originals 30 days, derived
    # and the document a year), apart from the month's processing
    keep_1000 = 1000 * (
        costs.upload_bytes / 1e9 * prices.originals_days / 30 * prices.blob_gb_month
        + costs.derived_bytes / 1e9 * prices.derived_days / 30 * prices.blob_gb_month
        + costs.document_kb / 1024**2 * 12 * prices.cosmos_gb_month
    )
    return {
        "lines_usd_month": {k: round(v, 2) for k, v in lines.items()},
        "total_usd_month": round(total, 2),
        "usd_per_1000_images": round(total / images * 1000, 4),
        "processing_usd_per_1000_images": round((total - kept) / images * 1000, 4),
        "retention_usd_per_1000_images": round(keep_1000, 4),
        "gb_s_month": round(gb_s),
        "executions_month": round(executions),
        "ru_month": round(ru_month),
    }


def report(result: dict, cost: dict, costs: Costs, config: Config) -> str:
    p = result["profile"]
    lines = [
        f"profile {p['name']}: {p['images_per_month']:,.0f} images/month; simulated "
        f"{result['seconds'] / 3600:.0f} h, seed {result['seed']}; costs from {costs.source}",
        f"uploaded {result['uploaded']:,}  done {result['done']:,}  still queued "
        f"{result['in_queues']:,}  (instances fit in {config.memory_mb} MB: "
        f"{result['fits_in_memory']})",
        "saturates first (shared limit): "
        + (result["saturated_first"] or "none reached (only cold starts / scale-out lag)"),
        "what held work back, minutes of the day (per function-second with work left waiting):",
    ]
    for limit, seconds in sorted(result["seconds_bound"].items(), key=lambda kv: -kv[1]):
        lines.append(
            f"  {limit:38s} bound {seconds / 60:8.1f} min, first at "
            f"{result['first_bound_at_s'][limit] / 3600:5.2f} h"
        )
    lines.append("peak use of each limit (1.00 = at the limit), busiest first:")
    for limit, value in sorted(result["peak_use"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {limit:20s} {value:8.2f}")
    lines.append(
        "peak rates: " + ", ".join(f"{k} {v:,.0f}" for k, v in result["peak_rates"].items())
    )
    lat = result["latency_s"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines.append(
        f"backlog max {result['backlog_max']:,} messages waiting, "
        f"{result['backlog_over_1000_seconds'] / 60:.0f} min with over 1,000; latency upload→done "
        f"p50 {fmt(lat['p50'])} s, p90 {fmt(lat['p90'])}, "
        f"p95 {fmt(lat['p95'])}, p99 {fmt(lat['p99'])}, max {fmt(lat['max'])}"
    )
    lines.append(
        "peak instances per function: "
        + ", ".join(f"{k} {v}" for k, v in result["peak_instances"].items())
        + f" (cap {result['instance_cap']} in all)"
    )
    lines.append("hour  uploads     done  backlog_max  instances_max  p95_s")
    for h, row in enumerate(result["hourly"]):
        lines.append(
            f"{h:4d} {row['uploads']:8,} {row['done']:8,} {row['backlog_max']:12,} "
            f"{row['instances_max']:14,}  {fmt(row['p95_s'])}"
        )
    lines.append(
        f"month: ${cost['total_usd_month']:,.2f} = ${cost['usd_per_1000_images']:.4f} per 1,000 "
        f"images (processing ${cost['processing_usd_per_1000_images']:.4f}; keeping 1,000 images "
        f"for their retention ${cost['retention_usd_per_1000_images']:.4f} once); "
        f"{cost['gb_s_month']:,} GB-s, {cost['ru_month']:,} RU"
    )
    for item, usd in cost["lines_usd_month"].items():
        lines.append(f"  {item:28s} ${usd:,.2f}")
    return "\n".join(lines)


TUNABLE = (
    "cores",
    "memory_mb",
    "max_instances",
    "quota_cores",
    "scale_interval",
    "scale_step",
    "scale_in_delay",
    "cold_start",
    "storage_rps",
    "queue_mps",
    "storage_accounts",
    "queue_partitions",
    "cosmos_max_rus",
    "overhead_cpu_s",
    "io_s",
    "batch_size",
    "new_batch_threshold",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="50M")
    parser.add_argument("--images-per-month", type=float, help="override the profile's volume")
    parser.add_argument("--bursts-per-day", type=float)
    parser.add_argument("--burst-images", type=int)
    parser.add_argument("--burst-seconds", type=int)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--costs", type=Path, default=COSTS_JSON, help="measure_ru's JSON")
    parser.add_argument("--no-costs-json", action="store_true", help="use the constants")
    parser.add_argument("--faces-per-image", type=float)
    parser.add_argument("--ru-per-image", type=float, help="override RU in the images container")
    parser.add_argument("--storage-requests-per-image", type=float)
    parser.add_argument(
        "--cpu", action="append", default=[], metavar="STEP=SECONDS", help="core-s per message"
    )
    defaults = Config()
    for name in TUNABLE:
        kind = type(getattr(defaults, name))
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name)
        )
    parser.add_argument(
        "--cosmos", choices=("serverless", "autoscale", "manual"), default="serverless"
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[Profile, Costs, Config]:
    base = PROFILES[args.profile]
    profile = Profile(
        base.name,
        args.images_per_month or base.images_per_month,
        base.bursts_per_day if args.bursts_per_day is None else args.bursts_per_day,
        args.burst_images or base.burst_images,
        args.burst_seconds or base.burst_seconds,
    )
    if args.costs.exists() and not args.no_costs_json:
        costs = Costs.from_measurement(args.costs, args.faces_per_image)
    else:
        costs = Costs(**({"faces_per_image": args.faces_per_image} if args.faces_per_image else {}))
    if args.ru_per_image is not None:
        costs.ru_images = args.ru_per_image
    if args.storage_requests_per_image is not None:
        costs.storage_requests = args.storage_requests_per_image
    config = Config(
        **{
            name: getattr(args, name)
            for name in Config.__dataclass_fields__
            if hasattr(args, name) and name not in ("cpu_s",)
        }
    )
    for item in args.cpu:
        step, _, seconds = item.partition("=")
        if step not in STEPS:
            raise SystemExit(f"--cpu {item}: step must be one of {', '.join(STEPS)}")
        config.cpu_s[step] = float(seconds)
    return profile, costs, config


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile, costs, config = build(args)
    result = simulate(profile, costs, config, seed=args.seed, seconds=int(args.hours * 3600))
    cost = monthly_cost(result, costs, config, Prices())
    if args.json:
        print(json.dumps({"result": result, "cost": cost, "costs": asdict(costs)}, indent=2))
    else:
        print(report(result, cost, costs, config))


if __name__ == "__main__":
    main()

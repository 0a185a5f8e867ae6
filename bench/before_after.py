"""Before and after in one run: bench_chain in a worktree of a baseline commit and here.

Run: `.venv/bin/python -m bench.before_after [--before b5c7fde] [--sizes 12,2] [--images 20]
[--rounds 1]`. Writes `bench/results/before_after.json` and prints a Markdown table.

The baseline is checked out once as a git worktree under `.darkroom/bench/` and made runnable
the way its own set-up did, without touching this checkout's environment: the same `.venv`
(linked), its own `npm ci`, its own model steps (the `python -m` lines of its scripts/setup.sh),
its `local.settings.sample.json`. Then, for every size and round, in a rotating order, three
runs of this checkout's `bench/bench_chain.py` (copied into the worktree: it uses only APIs
every version has had):

- **before**: the baseline, on the route both versions have (no recognize before issue 11);
- **after, same route**: this checkout on that route — the like-for-like figure;
- **after, default route**: this checkout as it deploys, recognize included.

Every run makes the same photos (the samples enlarged, deterministic), measures the steps
in-process, then the whole local stack, then prepare and transform against libvips. Ratios are
within a round, where the machine's noise is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
COMMON_ROUTE = "prepare,analyze,transform,store"
DEFAULT_ROUTE = "prepare,analyze,recognize,transform,store"


def log(*parts: object) -> None:
    print("[before_after]", *parts, file=sys.stderr, flush=True)


def setup_modules(tree: Path) -> list[str]:
    """The model-making modules the baseline's own set-up runs (`.venv/bin/python -m X` in its
    scripts/setup.sh, in order), without pip: the venv is this checkout's. Each version made
    its models its own way (one exporter at first, five steps later)."""
    script = (tree / "scripts" / "setup.sh").read_text()
    found = re.findall(r"^\s*\.venv/bin/python -m ([\w.]+)", script, re.M)
    return [module for module in found if module != "pip"]


def baseline_tree(rev: str) -> Path:
    """A runnable worktree of `rev` (idempotent: a second call only re-copies the bench)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=HERE, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = HERE / ".darkroom" / "bench" / f"before-{sha}"
    if not (tree / ".git").exists():
        log(f"worktree of {sha} at {tree}")
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--force", "--detach", str(tree), sha], cwd=HERE, check=True
        )
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(HERE / ".venv")
    if not (tree / "node_modules" / ".darkroom-lock").exists():
        log("npm ci in the baseline (its own emulators and model packages)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=tree, check=True
        )
        shutil.copy(tree / "package-lock.json", tree / "node_modules" / ".darkroom-lock")
    python = str(HERE / ".venv" / "bin" / "python")
    for module in setup_modules(tree):
        log(f"python -m {module} in the baseline")
        subprocess.run([python, "-m", module], cwd=tree, check=True)
    settings = tree / "local.settings.json"
    if not settings.exists():
        shutil.copy(tree / "local.settings.sample.json", settings)
    shutil.copy(HERE / "bench" / "bench_chain.py", tree / "bench" / "bench_chain.py")
    return tree


def run_bench(tree: Path, route: str, megapixels: float, images: int) -> dict[str, Any]:
    command = [
        str(HERE / ".venv" / "bin" / "python"),
        "-m",
        "bench.bench_chain",
        "--images",
        str(images),
        "--megapixels",
        str(megapixels),
        "--route",
        route,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKROOM_", "PIPELINE_"))}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench_chain failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Medians over rounds of the figures the table shows, per variant."""
    out = {}
    for variant, results in runs.items():
        chain = [r["chain"] for r in results]
        workers = [c["peak_rss_mb"].get("worker", 0.0) for c in chain]
        out[variant] = {
            "chain_img_s": _median([c["img_s"] for c in chain]),
            "in_process_img_s": _median([r["in_process"]["img_s"] for r in results]),
            "chain_over_in_process": _median([r["chain_over_in_process"] for r in results]),
            "prepare_over_vips": _median([r["imaging"]["prepare_over_vips"] for r in results]),
            "transform_over_vips": _median([r["imaging"]["transform_over_vips"] for r in results]),
            "worker_peak_rss_mb": _median(workers),
            "core_s_per_image": {
                name: _median([c["core_s_per_image"].get(name, 0.0) for c in chain])
                for name in sorted({n for c in chain for n in c["core_s_per_image"]})
            },
            "core_s_per_image_total": _median([c["core_s_per_image_total"] for c in chain]),
            "recorded_step_ms": results[-1]["chain"]["recorded"],
            "in_process_step_ms": results[-1]["in_process"]["step_ms"],
        }
    return out


def table(size: str, summary: dict[str, Any]) -> str:
    before, same, full = (summary[k] for k in ("before", "after_same_route", "after_default"))
    rows = [
        ("full chain, img/s", "chain_img_s"),
        ("the same steps in-process, 2 processes, img/s", "in_process_img_s"),
        ("chain ÷ in-process", "chain_over_in_process"),
        ("prepare ÷ libvips thumbnail", "prepare_over_vips"),
        ("transform ÷ libvips thumbnail", "transform_over_vips"),
        ("worker peak RSS, MB", "worker_peak_rss_mb"),
        ("core-seconds per image, whole stack", "core_s_per_image_total"),
    ]
    lines = [
        f"| {size} | before | after, same route | after ÷ before | after, default route |",
        "|---|---|---|---|---|",
    ]
    for label, key in rows:
        ratio = round(same[key] / before[key], 2) if before[key] else "-"
        lines.append(f"| {label} | {before[key]} | {same[key]} | {ratio} | {full[key]} |")
    for name in sorted(set(before["core_s_per_image"]) | set(same["core_s_per_image"])):
        b = before["core_s_per_image"].get(name, 0.0)
        s = same["core_s_per_image"].get(name, 0.0)
        f = full["core_s_per_image"].get(name, 0.0)
        ratio = round(s / b, 2) if b else "-"
        lines.append(f"| core-s per image: {name} | {b} | {s} | {ratio} | {f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__)
    parser.add_argument("--before", default="b5c7fde", help="baseline commit")
    parser.add_argument("--sizes", default="12,2", help="megapixels, comma-separated")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "bench" / "results" / "before_after.json"))
    args = parser.parse_args(argv)
    before_tree = baseline_tree(args.before)
    variants = {
        "before": (before_tree, COMMON_ROUTE),
        "after_same_route": (HERE, COMMON_ROUTE),
        "after_default": (HERE, DEFAULT_ROUTE),
    }
    report: dict[str, Any] = {"before": args.before, "images": args.images, "sizes": {}}
    for size in (float(s) for s in args.sizes.split(",")):
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % 3 :] + names[: r % 3]:
                tree, route = variants[name]
                log(f"{size:g} MP, round {r + 1}: {name}")
                runs[name].append(run_bench(tree, route, size, args.images))
        summary = summarise(runs)
        label = f"{size:g} MP ({runs['before'][0]['size']})"
        report["sizes"][label] = {"summary": summary, "runs": runs}
        print(table(label, summary), "\n", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

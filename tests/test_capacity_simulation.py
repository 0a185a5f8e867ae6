"""bench/simulate_capacity on tiny, crafted inputs: properties, not timings.

No emulator, no host: the simulation is arithmetic over a day (here, minutes) of uploads.
"""

from __future__ import annotations

import dataclasses

import pytest

from bench.simulate_capacity import (
    PROFILES,
    Config,
    Costs,
    Prices,
    Profile,
    main,
    monthly_cost,
    simulate,
)

TINY = Profile("tiny", 200_000, 1, 300, 60)
MINUTES = 20 * 60


def run(config: Config | None = None, rates: list[float] | None = None, **kw) -> dict:
    return simulate(
        TINY, Costs(), config or Config(), seed=kw.pop("seed", 3), seconds=MINUTES, rates=rates
    )


def steady(per_second: float) -> list[float]:
    """A constant upload rate for the first three quarters, then nothing (time to drain)."""
    return [per_second if t < MINUTES * 3 // 4 else 0.0 for t in range(MINUTES)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_upload_is_done_or_still_queued(seed):
    result = run(seed=seed)
    assert result["uploaded"] > 0
    assert result["uploaded"] == result["done"] + result["in_queues"]


def test_instances_that_do_not_fit_in_memory_process_nothing_and_lose_nothing():
    result = run(Config(memory_mb=512, cores=0.25))  # the worker alone is 671 MB
    assert not result["fits_in_memory"]
    assert result["done"] == 0
    assert result["in_queues"] == result["uploaded"] > 0


def test_same_seed_same_day():
    assert run(seed=7) == run(seed=7)
    assert run(seed=7)["uploaded"] != run(seed=8)["uploaded"]


@pytest.mark.parametrize(
    "change",
    [
        {"max_instances": 10, "quota_cores": 10},
        {"cosmos_max_rus": 1_000.0},
        {"storage_rps": 1_500.0},
    ],
)
def test_doubling_the_scarce_capacity_never_increases_the_backlog(change):
    scarce = Config(**change)
    doubled = Config(**{k: v * 2 for k, v in change.items()})
    for seed in (1, 2):
        tight = run(scarce, rates=steady(20.0), seed=seed)
        roomy = run(doubled, rates=steady(20.0), seed=seed)
        assert roomy["backlog_max"] <= tight["backlog_max"]
        assert roomy["done"] >= tight["done"]


@pytest.mark.parametrize(
    ("change", "bottleneck"),
    [
        ({"cosmos_max_rus": 200.0}, "cosmos images RU/s"),
        ({"storage_rps": 300.0}, "storage account requests/s"),
        ({"max_instances": 6}, "instance cap (quota / maximumInstanceCount)"),
        ({"quota_cores": 6.0}, "instance cap (quota / maximumInstanceCount)"),
        ({"queue_mps": 5.0}, "queue messages/s"),
    ],
)
def test_saturation_names_the_limit_that_was_made_scarce(change, bottleneck):
    result = run(Config(**change), rates=steady(20.0))
    assert result["saturated_first"] == bottleneck
    assert result["seconds_bound"][bottleneck] > 0


def test_faces_move_ru_to_the_faces_containers():
    # images RU made negligible, so only the faces containers can run out
    few, many = Costs(faces_per_image=0.0, ru_images=1.0), Costs(faces_per_image=3.0, ru_images=1.0)
    config = Config(cosmos_max_rus=400.0)
    with_faces = simulate(TINY, many, config, seed=1, seconds=MINUTES, rates=steady(5.0))
    without = simulate(TINY, few, config, seed=1, seconds=MINUTES, rates=steady(5.0))
    assert with_faces["peak_use"]["cosmos faces"] > 0 == without["peak_use"]["cosmos faces"]
    assert with_faces["saturated_first"] == "cosmos faces RU/s"


def test_a_quiet_day_scales_to_zero_and_pays_cold_starts():
    rates = [0.0] * MINUTES
    rates[10] = rates[900] = 1.0  # two lone uploads, far apart
    config = Config()
    result = run(config, rates=rates)
    assert result["uploaded"] == result["done"]
    assert "cold start (no instance ready)" in result["seconds_bound"]
    # each lone image waited for one cold start per function of the route
    assert result["latency_s"]["max"] >= len(result["peak_instances"]) * config.cold_start


def test_monthly_cost_adds_up_and_scales_with_volume():
    small = dataclasses.replace(TINY, images_per_month=10_000)
    result = simulate(small, Costs(), Config(), seed=1, seconds=MINUTES)
    cost = monthly_cost(result, Costs(), Config(), Prices())
    assert cost["total_usd_month"] == pytest.approx(sum(cost["lines_usd_month"].values()), abs=0.05)
    autoscale = monthly_cost(result, Costs(), Config(cosmos="autoscale"), Prices())
    # autoscale never bills below a tenth of its maximum, serverless only what was used
    assert (
        autoscale["lines_usd_month"]["cosmos_throughput"]
        > cost["lines_usd_month"]["cosmos_throughput"]
    )


def test_the_command_line_runs_every_profile(capsys):
    for name in PROFILES:
        main(["--profile", name, "--hours", "0.25", "--no-costs-json"])
        out = capsys.readouterr().out
        assert f"profile {name}:" in out and "per 1,000 images" in out

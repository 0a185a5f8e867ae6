from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import urllib3

from tests.harness import Pipeline, emulator_env, isolated_env, running_emulators

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite + the Cosmos emulator for the whole session, on free ports."""
    env = emulator_env(tmp_path_factory.mktemp("stack"))
    with running_emulators(env):
        yield env


@pytest.fixture
def make_pipeline(emulators: dict[str, str]) -> Iterator[Callable[..., Pipeline]]:
    """Build isolated pipelines (own queues, containers, Cosmos container); hosts stopped after."""
    made: list[Pipeline] = []

    def make(steps: str = "prepare,store", host: bool = True, **extra: str) -> Pipeline:
        n = next(_numbers)
        defaults = {
            "DARKROOM_HOST_WORKERS": "2",
            "DARKROOM_HOST_LEASE_SECONDS": "10",
            "DARKROOM_RETRY_BASE_SECONDS": "0.2",
            "DARKROOM_RETRY_MAX_SECONDS": "1",
        }
        env = isolated_env(emulators, f"t{os.getpid() % 1000}x{n}-", steps, **{**defaults, **extra})
        pipeline = Pipeline(env).provision()
        made.append(pipeline)
        if host:
            pipeline.start_host()
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop_host()


@pytest.fixture
def fixture_bytes() -> Callable[[str], bytes]:
    return lambda name: (Path(__file__).parent / "fixtures" / name).read_bytes()

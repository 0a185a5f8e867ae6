"""Takes a few seconds, so a test can kill the worker while it is inside the step.

Each attempt first appends `<attempt> <pid>` to the file named by `DARKROOM_TEST_SLOW_MARKER`
(when set), so the test knows which worker process is running the step right now. With
`DARKROOM_TEST_SLOW_CRASH=1` the step then kills its own worker process (SIGKILL), like an image
that makes a decoder crash the process every time.
"""

import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Slow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempt: int = Field(ge=1, description="Attempt that finished.")
    pid: int = Field(description="Worker process that ran it.")


class SlowOutput(BaseModel):
    slow: Slow = Field(description="Which attempt and worker finished the step.")


manifest = StepManifest(
    name="slow",
    version="0.1.0",
    description="Sleeps DARKROOM_TEST_SLOW_SECONDS (default 3), then reports which attempt it was.",
    reads=("image",),
    writes=("slow",),
    output=SlowOutput,
)


def run(ctx: StepContext) -> dict:
    env = ctx.settings.env
    if marker := env.get("DARKROOM_TEST_SLOW_MARKER"):
        with Path(marker).open("a") as out:
            out.write(f"{ctx.attempt} {os.getpid()}\n")
    if env.get("DARKROOM_TEST_SLOW_CRASH") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(env.get("DARKROOM_TEST_SLOW_SECONDS", "3")))
    return {"slow": {"attempt": ctx.attempt, "pid": os.getpid()}}

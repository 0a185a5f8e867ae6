"""Timer triggers on the local host: the same NCRONTAB schedules the Functions host runs.

NCRONTAB has six fields, seconds first (`0 */2 * * * *`); croniter reads them with
`second_at_beginning`. One thread per timer function calls it at each due time and logs a
failure without stopping the schedule, as the Functions host does. Past-due runs are not
caught up: a missed tick is simply the next one, which is what a sweep needs.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import azure.functions as func
from croniter import croniter

from local.host.functions import TimerFunction

log = logging.getLogger("darkroom.host.timers")


class _Timer(func.TimerRequest):
    """What a timer function receives (its `past_due` flag is always False here)."""

    @property
    def past_due(self) -> bool:
        return False


def _run(timer: TimerFunction, stop: threading.Event) -> None:
    schedule = croniter(timer.schedule, datetime.now(UTC), second_at_beginning=True)
    while not stop.is_set():
        due = schedule.get_next(datetime)
        if stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
            return
        try:
            timer.call(**{timer.arg_name: _Timer()})
        except Exception:
            log.exception("timer function %s failed", timer.name)


def start_timers(timers: list[TimerFunction], stop: threading.Event) -> list[threading.Thread]:
    threads = []
    for timer in timers:
        thread = threading.Thread(target=_run, args=(timer, stop), name=timer.name, daemon=True)
        thread.start()
        threads.append(thread)
    return threads

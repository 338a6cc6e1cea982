"""When a run ends before its last trial: the time budget and the target metric.

:class:`StopConditions` asks the driver for the same graceful stop as the dashboard's
Stop button and ``%maggy stop`` (``stop(reason)``: no new trials, running ones told to
stop, each given the run's ``stop_grace``), with a reason that the ``stop_requested``
event, the journal, the result (``result.stop_reason``) and the displays carry:

* ``time_budget`` (seconds): counted from the moment the driver starts serving, for
  each session of a run. A resumed run gets the whole budget again for the trials it has
  left (its earlier sessions do not count).
* ``target``: the first trial of this session that finishes with a metric at or beyond
  the target (``>=`` for ``direction="max"``, ``<=`` for ``"min"``) ends the run.
  Trials of earlier sessions do not count, so resuming a run that reached its target
  runs the trials it has left, until a new trial reaches the target again.

Driver loop thread only.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from ..trial import Trial


def format_duration(seconds: float) -> str:
    """``5400`` → ``"1h30m"``, ``90`` → ``"1m30s"``, ``2.5`` → ``"2.5s"``."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)


class StopConditions:
    """The run's time budget and target; ``stop(reason)`` begins the graceful stop."""

    def __init__(self, settings, stop: Callable[[str], None]):
        self.time_budget: Optional[float] = getattr(settings, "time_budget", None)
        self.target: Optional[float] = getattr(settings, "target", None)
        self.direction = settings.direction
        self.key = settings.optimization_key
        self.stop = stop

    def start(self, add_periodic: Callable[..., None]) -> None:
        """The driver starts serving: the time budget runs from now."""
        if self.time_budget is not None:
            add_periodic(self.time_budget, self._budget_used)

    def _budget_used(self) -> None:
        self.stop(f"time budget of {format_duration(self.time_budget)} reached")

    def finished(self, trial: Trial) -> None:
        """``trial`` returned its metric: end the run if it reaches the target."""
        value = trial.final_metric
        if self.target is None or isinstance(value, bool) or \
                not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        reached = value >= self.target if self.direction == "max" else value <= self.target
        if reached:
            sign = ">=" if self.direction == "max" else "<="
            self.stop(f"target {self.key} {sign} {self.target:g} reached by trial "
                      f"{trial.trial_id} ({value:g})")

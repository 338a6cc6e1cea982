"""Text progress for places without widgets: terminal IPython, scripts, papermill.

:class:`TextProgress` has the interface of the live dashboard (see :mod:`maggy_magic.ui`):
it is an event listener, ``show()`` announces the run, ``wait(driver)`` blocks until the
run ends while printing a status line (finished / running / early-stopped / failed of
total, best so far, elapsed), and ``finish(result)`` prints the final line, the table and,
for a search, its parameter importances in one line.

Threading: the listener runs on the driver's thread and only updates counters under a
lock; every print happens on the thread that calls ``show``/``wait``/``finish`` (the
kernel's main thread), so output lands in the cell that runs the experiment.

Rate: on a terminal the line is rewritten in place at most four times a second. Anywhere
else (a notebook's stream output, a log file) a new line is printed only when something
changed, at most every half second at first and less often as the run gets longer (one
line per 5 % of the elapsed time), so a long papermill run leaves a readable log.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO

from .search_svg import importance_line
from .summary import fmt, ranked

#: Seconds between line rewrites on a terminal.
TTY_INTERVAL = 0.25
#: Shortest gap between printed lines elsewhere.
LOG_INTERVAL = 0.5
#: Rows of the final table; the rest is counted.
MAX_ROWS = 20


class TextProgress:
    """A status line while the run goes, the final table when it ends."""

    def __init__(self, title: str, *, stream: Optional[TextIO] = None,
                 max_rows: int = MAX_ROWS):
        self.title = title
        self.max_rows = max_rows
        self._stream = stream
        self._lock = threading.Lock()
        self._counts = {"finished": 0, "early_stopped": 0, "failed": 0}
        self._running: set = set()
        self._total: Optional[int] = None
        self._key = "metric"
        self._direction = "max"
        self._best: Optional[tuple] = None
        self._started = time.time()
        self._run: Dict[str, Any] = {}
        self._state = "starting"
        self._last_line = ""
        self._last_print = 0.0
        self._open_line = False

    # -- listener (driver thread) -------------------------------------------------------
    def __call__(self, event: Dict[str, Any]) -> None:
        kind = event["type"]
        with self._lock:
            if kind == "run_started":
                config = event.get("config") or {}
                self._total = config.get("num_trials")
                self._key = config.get("optimization_key", self._key)
                self._direction = config.get("direction", self._direction)
                self._started = event["t"]
                self._run = {"id": event.get("run"), "dir": event.get("run_dir"),
                             "workers": config.get("workers"),
                             "backend": config.get("backend")}
                self._state = "running"
            elif kind == "trial_started":
                self._running.add(event["trial"])
            elif kind == "trial_retried":
                self._running.discard(event["trial"])
            elif kind == "trial_finished":
                self._running.discard(event["trial"])
                stopped = event.get("state") == "EARLY_STOPPED"
                self._counts["early_stopped" if stopped else "finished"] += 1
                value = event.get("value")
                if value is not None and (self._best is None or (
                        value > self._best[0] if self._direction == "max"
                        else value < self._best[0])):
                    self._best = (value, event["trial"])
            elif kind == "trial_failed":
                self._running.discard(event["trial"])
                self._counts["failed"] += 1
            elif kind == "stop_requested":
                self._state = "stopping"
            elif kind == "run_finished":
                self._state = event.get("state", "finished")
                self._running.clear()

    # -- display (calling thread) -------------------------------------------------------
    def show(self) -> None:
        """Announce the run (call once the ``run_started`` event has been seen)."""
        run = self._run
        self._print_line(f"maggy-magic {self.title}: run {run.get('id')} on "
                         f"{run.get('workers')} {run.get('backend')} worker(s), "
                         f"{self._total} trials; {run.get('dir')}", final=True)

    def wait(self, driver: Any) -> None:
        """Block until ``driver.done``, printing progress; KeyboardInterrupt passes."""
        tty = self._is_tty()
        while not driver.wait(TTY_INTERVAL if tty else self._log_interval()):
            self.render()

    def render(self) -> None:
        """Print the status line if due (see the module docstring for the rate)."""
        line = self.status_line()
        now = time.monotonic()
        if self._is_tty():
            self._print_line(line)
        elif line != self._last_line and now - self._last_print >= self._log_interval():
            self._print_line(line, final=True)
            self._last_print = now
        self._last_line = line

    def status_line(self) -> str:
        with self._lock:
            counts, running, best = dict(self._counts), len(self._running), self._best
            state, total = self._state, self._total
        done = sum(counts.values())
        best_text = (f"best {self._key}={fmt(best[0])} (trial {best[1]})" if best
                     else "best: none yet")
        # most important first: a terminal cuts the line at its width
        return (f"{self.title} [{state}] {done}/{total if total else '?'} trials, "
                f"{_clock(time.time() - self._started)} | {best_text} | "
                f"{counts['finished']} finished, {running} running, "
                f"{counts['early_stopped']} early-stopped, {counts['failed']} failed")

    def finish(self, result: Any) -> None:
        """Print the final line and the trial table of ``result`` (an ExperimentResult;
        None when the run ended without one: then only the open line is ended)."""
        self.close()
        if result is None:
            return
        best = result.best_trial
        best_text = (f"best {result.optimization_key}={fmt(best['value'])} (trial "
                     f"{best['trial']}) with {best['params']}" if best else "no metric")
        reason = getattr(result, "stop_reason", None)
        self._write(f"{self.title} [{result.state}] {len(result.trial_records)} trials: "
                    f"{result.num_finished} finished, {result.num_early_stopped} "
                    f"early-stopped, {result.num_failed} failed | {best_text} | "
                    f"{_clock(time.time() - self._started)}"
                    + (f" | stopped: {reason}" if reason else "") + "\n")
        self._write(format_table(result.trial_records, result.optimization_key,
                                 result.direction, self.max_rows) + "\n")
        line = importance_line(result)
        if line:
            self._write(line + "\n")

    def close(self) -> None:
        """End an open status line."""
        if self._open_line:
            self._write("\n")
            self._open_line = False

    # -- output -------------------------------------------------------------------------
    def _out(self) -> TextIO:
        return self._stream or sys.stdout

    def _is_tty(self) -> bool:
        try:
            return bool(self._out().isatty())
        except (AttributeError, ValueError):
            return False

    def _log_interval(self) -> float:
        return max(LOG_INTERVAL, 0.05 * (time.time() - self._started))

    def _print_line(self, line: str, final: bool = False) -> None:
        if final:
            self._write(("\n" if self._open_line else "") + line + "\n")
            self._open_line = False
        else:
            # a rewritten line must fit the terminal, or \r cannot return to its start
            width = shutil.get_terminal_size().columns - 1
            self._write("\r" + line[:width].ljust(min(width, len(self._last_line))))
            self._open_line = True

    def _write(self, text: str) -> None:
        out = self._out()
        out.write(text)
        out.flush()


def format_table(records: List[Dict[str, Any]], key: str, direction: str,
                 max_rows: int = MAX_ROWS) -> str:
    """The trials as a fixed-width text table, best first, at most ``max_rows`` rows."""
    order = ranked(records, direction)
    shown = order[:max_rows]
    names: List[str] = []
    for record in shown:
        names.extend(n for n in record.get("params", {}) if n not in names)
    head = ["trial", "state", key, *names, "last step", "duration", "worker"]
    rows = [head]
    for record in shown:
        steps = record.get("steps") or []
        rows.append([str(record.get("trial")), str(record.get("state")),
                     fmt(record.get("value")),
                     *(fmt(record.get("params", {}).get(n)) for n in names),
                     str(steps[-1]) if steps else "", fmt(record.get("duration")),
                     str(record.get("worker") or "")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    if len(order) > max_rows:
        lines.append(f"... {len(order) - max_rows} more trials (result.trials has them all)")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{max(0.0, seconds):.1f}s"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

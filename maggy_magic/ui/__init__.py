"""What a run looks like while it goes, and the one place that picks how it is shown.

A *live display* is what the magic hands the experiment; both kinds have the same shape:

- ``display(event)``: an event listener (called on the driver's thread);
- ``display.show()``: put it on screen (called once the run has started);
- ``display.wait(driver)``: block until ``driver.done``, keeping the display alive
  (passed to ``experiment.run`` as ``wait=``; KeyboardInterrupt passes through);
- ``display.close()``: the run is over: push the final state, end background work
  (idempotent; the widget itself stays on screen).

``live_display`` returns the anywidget dashboard (:mod:`maggy_magic.ui.dashboard`) when
that module imports and a widget frontend is present, else :class:`~.text.TextProgress`.
The environment variable ``MAGGY_MAGIC_UI`` sets the default of ``auto``: ``text``,
``widget``, or ``papermill`` — both at once, for unattended runs: the widget's final state
is saved in the output notebook and the text progress is the readable log (the
``maggy-magic run`` command sets it). ``MAGGY_MAGIC_PROGRESS`` names a file for that log
(``maggy-magic run`` sets it and shows the file on its terminal as it grows), so that the
saved notebook holds the dashboard and the summary rather than a progress line per
half second; without it the log is the cell's output.
``finish(display, result)`` lets a display print its final words (the text table); the
static HTML summary (:mod:`.summary`) is shown by the magic in every case.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Callable, Optional

from ..errors import ConfigError, did_you_mean

#: Values of the magic's ``--ui`` option.
UI_MODES = ("auto", "widget", "text", "papermill")
#: Environment variable that picks what ``auto`` means.
UI_ENV = "MAGGY_MAGIC_UI"
#: Environment variable naming the file the text progress of unattended runs goes to.
PROGRESS_ENV = "MAGGY_MAGIC_PROGRESS"


def dashboard_module() -> Optional[ModuleType]:
    """The live dashboard module, or None when it (or anywidget) cannot be imported."""
    try:
        from . import dashboard
    except ImportError:
        return None
    return dashboard


def widgets_available() -> bool:
    """Whether the live dashboard can be shown here (module present, widget frontend)."""
    module = dashboard_module()
    return bool(module is not None and module.widgets_available())


def live_display(title: str, on_stop: Callable[[], None], mode: str = "auto") -> Any:
    """The live display for a run: the dashboard if possible (``mode`` ``auto``/``widget``),
    the text progress otherwise (or with ``mode="text"``)."""
    if mode not in UI_MODES:
        raise ConfigError(f"unknown --ui {mode!r}; {did_you_mean(mode, UI_MODES)}")
    if mode == "auto":
        mode = os.environ.get(UI_ENV, "auto").strip().lower()
        if mode not in UI_MODES:
            raise ConfigError(f"unknown {UI_ENV}={mode!r}; {did_you_mean(mode, UI_MODES)}")
    if mode != "text" and widgets_available():
        from .dashboard import Dashboard

        board = Dashboard(title=title, on_stop=on_stop)
        if mode != "papermill":
            return board
        from .text import TextProgress

        log = _progress_log()
        return _Both(board, TextProgress(title, stream=log), log)
    if mode == "widget":
        raise ConfigError("--ui widget needs the live dashboard (anywidget in a Jupyter "
                          "kernel with a widget frontend); use --ui text or --ui auto")
    from .text import TextProgress

    return TextProgress(title)


class _Both:
    """The dashboard and the text progress fed by the same events (unattended runs).

    The text progress owns the waiting (it prints from the waiting thread); nobody can
    click Stop in an unattended run, so the dashboard needs no message pump there.
    """

    def __init__(self, board: Any, text: Any, log: Any = None):
        self.board, self.text, self.log = board, text, log

    def __call__(self, event: dict) -> None:
        self.board(event)
        self.text(event)

    def show(self) -> None:
        self.board.show()
        self.text.show()

    def wait(self, driver: Any) -> None:
        self.text.wait(driver)

    def close(self) -> None:
        self.board.close()
        self.text.close()

    def finish(self, result: Any) -> None:
        finish(self.text, result)
        if self.log is not None:
            self.log.close()


def _progress_log() -> Any:
    """The file ``PROGRESS_ENV`` names, opened to append line by line; None (the cell's
    output) when unset or when it cannot be opened."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return None
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError:
        return None


def finish(display: Any, result: Any) -> None:
    """Give ``display`` the run's final result (None when the run produced none), if it
    wants it: the text progress prints its final line and table."""
    final = getattr(display, "finish", None)
    if callable(final):
        final(result)


def replay(run_dir: str, title: str) -> Optional[Any]:
    """A dashboard showing the recorded events of ``run_dir``; None without widgets."""
    if not widgets_available():
        return None
    from ..store import read_journal
    from .dashboard import Dashboard

    board = Dashboard(title=title, on_stop=lambda: None)
    for event in read_journal(run_dir):
        board(event)
    board.show()
    board.close()
    return board


__all__ = ["UI_MODES", "dashboard_module", "widgets_available", "live_display",
           "finish", "replay"]

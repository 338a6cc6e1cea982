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
is saved in the output notebook and the text progress is the cell's readable log (the
``maggy-magic run`` command sets it).
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

        return _Both(board, TextProgress(title))
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

    def __init__(self, board: Any, text: Any):
        self.board, self.text = board, text

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

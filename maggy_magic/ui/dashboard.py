"""The live dashboard: an anywidget fed by the experiment's event stream.

One :class:`Dashboard` is one listener on the driver's events (``dash(event)``). It folds
events into a bounded view state (:mod:`maggy_magic.ui.state`) and a background thread
syncs what changed to the front-end at most every ``interval`` seconds (four times a
second by default), however fast events come: a burst of thousands of events costs a
couple of comm messages. The front-end (``js/``, shipped as ``ui/static/dashboard.js``)
draws the state, and its Stop button calls ``on_stop``.

A kernel does not read widget messages while a cell runs, so :meth:`Dashboard.wait`
serves them itself (:mod:`maggy_magic.ui.comm_pump`) until the run is over: the Stop button
and table sorting work during a blocking ``%%maggy`` cell.

Parameter importances are computed off both the driver's and the cell's thread, by an
:class:`~maggy_magic.ui.importance.ImportanceLoop` poked when a trial finishes (at most
every ``importance_interval`` seconds), and once more when the dashboard closes.

Importing this module does not import anywidget; creating a :class:`Dashboard` does.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

from .importance import ImportanceLoop, param_importances
from .state import PARTS, DashboardState

_STATIC = pathlib.Path(__file__).with_name("static")
_WIDGET_CLASS = None

#: Set to "0" to never show widgets (the text progress is used instead).
ENV_WIDGETS = "MAGGY_MAGIC_WIDGETS"


def widgets_available() -> bool:
    """True when a widget can be shown: anywidget is installed and the code runs in an
    IPython kernel (whose front-end displays widgets) and ``MAGGY_MAGIC_WIDGETS`` is not
    ``0``. Terminal IPython and plain scripts get False."""
    if os.environ.get(ENV_WIDGETS, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import anywidget  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, ZMQInteractiveShell)


def widget_class():
    """The anywidget class of the dashboard (created on first use)."""
    global _WIDGET_CLASS
    if _WIDGET_CLASS is None:
        import anywidget
        import traitlets

        class DashboardWidget(anywidget.AnyWidget):
            """Synced parts of the dashboard; see js/dashboard.js for their shapes."""

            _esm = _STATIC / "dashboard.js"
            _css = _STATIC / "dashboard.css"
            status = traitlets.Dict().tag(sync=True)
            trials = traitlets.Dict().tag(sync=True)
            curves = traitlets.Dict().tag(sync=True)
            logs = traitlets.Dict().tag(sync=True)
            search = traitlets.Dict().tag(sync=True)
            #: set by the front-end: the table's sort column and direction
            table_sort = traitlets.Dict({"key": "trial", "desc": True}).tag(sync=True)

        _WIDGET_CLASS = DashboardWidget
    return _WIDGET_CLASS


class Dashboard:
    """A live view of one experiment (see the module docstring).

    Thread safety: ``__call__`` runs on the driver's thread, ``wait``/``show``/``close``
    on the cell's thread, the front-end's messages arrive on the cell's thread; all share
    one lock around the view state, and only one thread at a time writes the widget.
    ``on_stop`` is called at most once, when the Stop button is clicked.
    """

    def __init__(self, title: str, on_stop: Callable[[], None], *, interval: float = 0.25,
                 importance_interval: float = 5.0, **limits: Any):
        self.interval = interval
        self.syncs = 0                   # comm updates sent (each one batches all parts)
        self._on_stop = on_stop
        self._stop_sent = False
        #: The :class:`DashboardState` events fold into; the driver's thread writes it, so
        #: read it from elsewhere only once the dashboard is closed.
        self.state = DashboardState(title, **limits)
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._last_sync = 0.0
        self._sync_lock = threading.Lock()   # one writer of the widget at a time
        self._flusher: Optional[threading.Thread] = None
        self.importance = ImportanceLoop(self._importance_job, self._importances_found,
                                         interval=importance_interval)
        self.widget = widget_class()()
        self.widget.on_msg(self._on_message)
        self.widget.observe(self._on_sort, names="table_sort")
        self._sync()

    # -- the event listener -------------------------------------------------------------
    def __call__(self, event: Dict[str, Any]) -> None:
        """Fold one event in; the flusher thread syncs it soon. Cheap: no I/O here."""
        with self._cond:
            self.state.apply(event)
            if self._flusher is None and not self._closing:
                self._start_flusher()
            self._cond.notify()
        if event.get("type") == "trial_finished":
            self.importance.poke()

    # -- display ------------------------------------------------------------------------
    def show(self) -> None:
        """Display the widget in the current output area."""
        from IPython.display import display

        display(self.widget)
        with self._cond:
            if self._flusher is None and not self._closing:
                self._start_flusher()

    def wait(self, driver: Any) -> None:
        """Block until ``driver.done``, serving the kernel's widget messages meanwhile
        (without a kernel: just wait). KeyboardInterrupt propagates to the caller."""
        from .comm_pump import CommPump, Wakeup

        pump = CommPump.for_current_kernel()
        if pump is None:
            driver.wait()
            return
        wake = Wakeup()

        def watch() -> None:
            driver.wait()
            wake.set()

        threading.Thread(target=watch, name="maggy-dashboard-wait", daemon=True).start()
        try:
            with pump:
                pump.serve_until(wake)
        finally:
            wake.close()

    def close(self) -> None:
        """Stop the flusher, compute the final importances and push the final state now.
        Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        self.importance.stop()
        job = self._importance_job()
        if job is not None:     # the run's end: every finished trial counts
            self._importances_found(param_importances(*job))
        self._sync()
        self._closed = True

    # -- syncing ------------------------------------------------------------------------
    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="maggy-dashboard",
                                         daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        """Sync changes, at most once per ``interval``; events in between coalesce."""
        while True:
            with self._cond:
                while not self.state.dirty and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                delay = self._last_sync + self.interval - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - a display error must not kill the run
                print(f"maggy-magic: dashboard update failed: {exc!r}", file=sys.stderr)

    def _sync(self) -> None:
        with self._sync_lock:
            with self._cond:
                payload = self.state.take()
                self._last_sync = time.monotonic()
            if not payload:
                return
            with self.widget.hold_sync():
                for part in PARTS:
                    if part in payload:
                        setattr(self.widget, part, payload[part])
            self.syncs += 1

    # -- importances (on the importance loop's thread, or at close) ---------------------
    def _importance_job(self) -> Any:
        with self._cond:
            return self.state.search.snapshot(self.state.rows.values())

    def _importances_found(self, answer: Dict[str, Any]) -> None:
        with self._cond:
            self.state.set_importances(answer)
            self._cond.notify()

    # -- from the front-end -------------------------------------------------------------
    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "stop":
            if not self._stop_sent:
                self._stop_sent = True
                self._on_stop()

    def _on_sort(self, change: Dict[str, Any]) -> None:
        with self._cond:
            self.state.set_sort(change["new"])
            self._cond.notify()
            closed = self._closed
        if closed:          # after the run the kernel is idle: answer at once
            self._sync()

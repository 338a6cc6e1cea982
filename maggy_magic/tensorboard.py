"""TensorBoard for trials, with Maggy's API: ``tensorboard.logdir()``.

Inside a training function, ``logdir()`` is the running trial's own folder,
``<run dir>/tensorboard/<trial id>``: point a ``tf.summary`` writer, Keras'
``TensorBoard`` callback or torch's ``SummaryWriter`` there. On a worker that does not
share the driver's disk it is the same folder of a local staging folder, whose files
travel to the run directory when the trial ends (see :mod:`maggy_magic.trial_files`).
When the run ends, the experiment writes an HParams summary into ``<run dir>/tensorboard`` (see
:mod:`maggy_magic.hparams_summary`), so ``tensorboard --logdir <run dir>/tensorboard``
shows every trial's curves and, in the HParams tab, its parameters and metric.

Stdlib-only: it runs on the workers (local processes, Spark tasks).
"""

from __future__ import annotations

import os
import shlex

from .errors import NotInTrialError
from .reporter import current_reporter

#: Folder of a run directory that holds its TensorBoard logs.
FOLDER = "tensorboard"


def run_logdir(run_dir: str) -> str:
    """The TensorBoard folder of a run directory (what ``tensorboard --logdir`` takes)."""
    return os.path.join(run_dir, FOLDER)


def trial_logdir(run_dir: str, trial_id: str) -> str:
    """The TensorBoard folder of one trial of a run."""
    return os.path.join(run_logdir(run_dir), str(trial_id))


def logdir() -> str:
    """The running trial's TensorBoard folder (created if missing).

    Raises :class:`~maggy_magic.errors.NotInTrialError` when called outside a trial (in
    the notebook itself rather than in the training function).
    """
    reporter = current_reporter()
    if reporter is None:
        raise NotInTrialError("tensorboard.logdir() works only inside the training function "
                              "while it runs as a trial; call it there, not in the notebook")
    if not reporter.run_dir:
        raise NotInTrialError("this trial's driver did not tell its run directory, so "
                              "tensorboard.logdir() has no folder to give; run the "
                              "experiment with the same maggy-magic version on both sides")
    path = trial_logdir(reporter.files_root or reporter.run_dir, reporter.trial_id)
    os.makedirs(path, exist_ok=True)
    return path


def command(run_dir: str) -> str:
    """The shell command that opens a run in TensorBoard."""
    return f"tensorboard --logdir {shlex.quote(run_logdir(run_dir))}"


def how_to_open(run_dir: str) -> str:
    """What ``%maggy tensorboard`` and ``maggy-magic tensorboard`` print: the command, and
    a note when the run has no TensorBoard folder (yet)."""
    from .hparams_summary import wait_for_writers

    wait_for_writers(timeout=60)  # a run of this process may still be writing its summary
    text = command(run_dir)
    if not os.path.isdir(run_logdir(run_dir)):
        text += (f"\n(no {run_logdir(run_dir)} yet: it appears when a trial calls "
                 "tensorboard.logdir() or the run ends with tensorboard installed)")
    return text


__all__ = ["logdir", "run_logdir", "trial_logdir", "command", "how_to_open"]

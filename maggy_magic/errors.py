"""Errors a user can cause.

Every error that a user can provoke (bad configuration, bad training function, bad
search space, a failed experiment) is a :class:`MaggyError` subclass whose message is one
line that says what to change. Internal bugs stay ordinary exceptions.
"""

from __future__ import annotations


class MaggyError(Exception):
    """Base class of every user-facing error of maggy-magic."""


class SearchspaceError(MaggyError, ValueError):
    """A search space is malformed (bad type, bounds, or values)."""


class ConfigError(MaggyError, ValueError):
    """An experiment configuration is invalid (unknown optimizer, bad option value...)."""


class TrainFunctionError(MaggyError, TypeError):
    """The training function cannot be called the way the experiment needs."""


class InvalidMetricError(MaggyError, ValueError):
    """A training function returned or broadcast a value that is not a usable metric."""


class BroadcastError(InvalidMetricError):
    """``reporter.broadcast`` was called with a bad value or a decreasing step."""


class AblationError(ConfigError):
    """An ablation study cannot run as defined (an unknown layer, a layer whose removal
    leaves no valid model, a component without the generator it needs)."""


class UnsendableValueError(MaggyError, TypeError):
    """A value handed to the driver (a rendezvous value, a checkpoint note) is not JSON:
    raised at the call that produced it, naming the value's place and type."""


class NotInTrialError(MaggyError, RuntimeError):
    """Something that only a running trial can do (``tensorboard.logdir()``) was called
    outside one."""


class ExperimentFailed(MaggyError):
    """The experiment ended in failure (too many failed trials, workers unable to start)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class DistributedError(ExperimentFailed):
    """A distributed (``dist``) run failed: a rank failed or was lost, or the ranks could
    not meet (rendezvous timeout)."""


class RendezvousError(DistributedError):
    """A rank's rendezvous did not complete (a peer never arrived or the gang failed)."""


class ExperimentInterrupted(MaggyError, KeyboardInterrupt):
    """The experiment was interrupted; ``result`` holds what finished, the journal the rest.

    It is also a :class:`KeyboardInterrupt`, so code that handles interrupts keeps working.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class RunStoreError(MaggyError, OSError):
    """The run's own record (its journal, a trial's log, a link the run depends on) could
    not be written: the run fails, keeping what was already written, and can be resumed
    once the cause (a full disk, say) is gone."""


class ResumeError(MaggyError):
    """A run cannot be resumed (no such run directory, or its journal does not match)."""


class LivyError(MaggyError):
    """Talking to a cluster through Apache Livy failed; the subclass says how."""


class LivyUnreachable(LivyError):
    """Nothing answers at the Livy URL (wrong address, server down, no route)."""


class LivyAuthError(LivyError):
    """Livy refused the credentials (HTTP 401 or 403)."""


class LivySessionError(LivyError):
    """The Livy session does not exist, could not start, or died (was killed) mid-run."""


class LivyStatementError(LivyError):
    """A statement sent to the Livy session raised an error on the cluster."""


class LivyTimeout(LivyError):
    """A Livy statement or session did not finish within its time limit."""


class LivyVersionError(LivyError):
    """The cluster's Python cannot run what this kernel serialised (another minor
    version)."""


class EarlyStopException(Exception):
    """Raised inside a trial by ``reporter.broadcast`` once the driver has stopped it.

    The worker loop catches it and reports the trial as early-stopped with its last
    metric; training functions may catch it to clean up but should re-raise it.
    """

    def __init__(self, metric=None):
        super().__init__(metric)
        self.metric = metric


def is_maggy_error(name: str | None) -> bool:
    """Whether ``name`` is the class name of a MaggyError subclass of this module."""
    cls = globals().get(name or "")
    return isinstance(cls, type) and issubclass(cls, MaggyError)


def error_class(name: str | None, default: type = ExperimentFailed) -> type:
    """The MaggyError subclass called ``name``, else ``default``."""
    return globals()[name] if is_maggy_error(name) else default


def closest(word: str, choices) -> str:
    """The choice closest to ``word`` (for 'did you mean' hints); '' if nothing is close."""
    import difflib

    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return match[0] if match else ""


def did_you_mean(word: str, choices) -> str:
    """A sentence fragment naming the valid choices and the closest one."""
    choices = sorted(str(c) for c in choices)
    hint = closest(word, choices)
    valid = ", ".join(choices)
    return f"did you mean {hint!r}? (valid: {valid})" if hint else f"valid: {valid}"


class DistTrainingError(ConfigError):
    """Data-parallel training cannot run as configured (a model passed already built, a
    dataset of an unsupported kind, a framework that cannot train this way)."""


class UnsafePathError(MaggyError, OSError):
    """A folder that holds code maggy-magic ships or installs (the package zip for Spark
    executors, the install folder on a Livy driver) could be written by another user: it
    belongs to another uid, group or others may write it, or it is a symbolic link. The
    message names the folder and what to do (remove it, or set ``TMPDIR``)."""


class CheckpointDirError(ConfigError):
    """The ``checkpoint_dir`` of a dist run is not one folder that every rank sees (e.g. a
    path under each host's own ``/tmp``): a restarted gang could not find its checkpoint.
    Use a path every rank sees, ``storage=``, or leave ``checkpoint_dir`` unset (the
    checkpoints then travel through the driver)."""


class FilesLimitError(MaggyError):
    """What a trial asked to send to the driver (a recorded checkpoint) is over the run's
    ``files_limit_mb``."""

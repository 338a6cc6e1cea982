"""The driver: the one event loop that runs an experiment, whatever the backend.

It owns the optimizer (or ablator), the early-stopping rule and every :class:`Trial`;
it serves worker connections (see :mod:`maggy_magic.rpc`) and turns what workers say into
experiment events (see :mod:`maggy_magic.events`). Backends only launch and stop workers.

Threading: :meth:`Driver.serve` runs the loop in one thread and is the only code that
touches driver state. Other threads talk to it through :meth:`Driver.post` (thread-safe;
it wakes the loop through a socket pair), which is how :meth:`request_stop`,
:meth:`interrupt` and backend notifications arrive. Timers (heartbeat timeouts, early
stopping, journal flushes) are deadlines of the loop's ``select``; nothing sleeps.

Worker protocol (all messages are JSON dicts; ``→`` is worker to driver):

- → ``register {worker, host, pid, devices?}`` (``devices``: the GPU ids the backend gave
  the worker, when trials asked for GPUs); ← ``welcome {hb_interval, optimization_key,
  run_dir, run_token, files_limit, storage}``;
  registering also asks for a trial. ``run_token`` is what the driver wrote into
  ``<run_dir>/.maggy-token``: a worker that reads it there shares the driver's disk.
- ← ``trial {trial, params, budget, info}`` whenever the worker is idle and a trial is
  ready (an ask is parked until then). Optimizers that do not learn from results
  (``prefetch = True``: random and grid search) also get one trial queued on each worker
  ahead of time, so a worker goes from one trial to the next without waiting for the
  driver; the queued trial starts (``trial_started``) when the driver hears that the one
  before it ended.
- ← ``revoke {trial}``: drop that queued trial (the run is stopping).
- → ``heartbeat {trial, points, logs}``: metric points ``[step, value]`` and log records
  ``[trial, line]`` since the last message.
- ← ``stop {trial}``: the trial should end early (reporter raises at its next broadcast).
- → ``final {trial, value, metrics, early_stopped, points, logs}`` or
  → ``error {trial, error, error_type, traceback, points, logs}``: the trial ended; this
  also asks for the next one, so a trial costs one round trip.
- → ``fatal {error}``: the worker cannot run anything (cannot load the function).

Trial files (:mod:`.artifacts`, :mod:`maggy_magic.trial_files`), from workers that do not
share the driver's disk, before the trial's ``final`` / ``error``:

- → ``artifact {trial, batch, path, offset, data, last}``: ``data`` (base64, at most 1 MiB)
  of the file ``path`` (relative to the run directory, inside the trial's own folders or,
  for a chief, ``checkpoints/``) at ``offset``; chunks of a batch are staged.
- → ``artifacts_done {trial, batch, files, left, skipped, limit, checkpoint, stored}``: the
  batch is complete; the driver moves its files into place (a ``checkpoint`` replaces its
  folder whole and becomes the trial's ``info_dict["checkpoint"]``) and logs what was
  ``left`` (over ``files_limit``) or ``skipped`` (links); ``stored``: the files went to
  ``storage`` instead.
- → ``fetch {trial, path}``; ← ``files {trial, path, files: [[path, size]], error}``;
  → ``fetch {trial, path, offset}``; ← ``chunk {trial, path, offset, data, eof, error}``:
  a restarted rank copies a relayed checkpoint (under ``checkpoints/``) from the run
  directory.
- ← ``shutdown {}``: the experiment is over; the worker exits.

Gangs (trials that must run together, e.g. the ranks of data-parallel training): an
optimizer with ``gang_size = N > 1`` hands out N trials at a time, each with ``info``
``{gang, rank, ...}``; the driver starts them only when N workers are idle, together.

- → ``rendezvous {trial, key, value}``; ← ``rendezvous {trial, key, values}`` to every
  member once all N sent a value for that key (values in rank order), or ``{..., error}``.
  A rendezvous that does not complete within ``rendezvous_timeout`` fails the gang.
- → ``note {trial, info}``: merged into the trial's ``info_dict`` (e.g. a checkpoint).
- ← ``abort {}``: the worker's gang failed; the worker process exits at once (peers may be
  blocked in a collective operation) and the backend replaces it. A worker still connected
  ``abort_timeout`` seconds later is given up on (the backend kills it).

When a member fails or its worker is lost, every member ends (FAILED) and every member's
worker is aborted; then ``optimizer.gang_failed(trials, error)`` answers None (go on: it
may suggest a new gang) or the message the run fails with.

Modules: :mod:`.loop` (:class:`Driver`: the decisions), :mod:`.eventloop` (posted and
periodic calls), :mod:`.hub` (sockets and frames), :mod:`.tls`
(when to use TLS, the run's certificate), :mod:`.artifacts` (trial files and relayed
checkpoints), :mod:`.settings` (:class:`DriverSettings`,
:class:`WorkerState`), :mod:`.trial_queue` (trials waiting, the optimizer behind them),
:mod:`.assign` (queue-ahead / take-back), :mod:`.record` (trial states and their events),
:mod:`.summary` (best trial, counts); gangs are scheduled by
:class:`maggy_magic.distributed.gangs.GangPolicy`.
"""

from .loop import Driver
from .settings import DriverSettings, WorkerState

__all__ = ["Driver", "DriverSettings", "WorkerState"]

"""The optimizer of a dist run: one gang of ``world_size`` trials, restarted on failure.

Every rank's trial has the run's hyperparameters and ``info = {rank, world_size, gang,
attempt, checkpoint_dir, resume_from}``; ranks come from here, so rank 0 (the chief) is
always the first trial of a gang, whatever worker it lands on. When the gang fails (the
driver calls :meth:`DistPlan.gang_failed`), the run restarts it as attempt + 1 from the
last checkpoint the chief recorded, at most ``max_restarts`` times; otherwise the run fails
with the rank's error and what would have let it restart.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from ..optimizers.base import AbstractOptimizer, Suggestion
from ..trial import Trial


class DistPlan(AbstractOptimizer):
    """Suggests the ranks of one gang, then nothing (or the next attempt's ranks)."""

    prefetch = False

    def __init__(self, world_size: int, hparams: Dict[str, Any], *, max_restarts: int = 0,
                 checkpoint_dir: Optional[str] = None, framework: str = "torch"):
        super().__init__()
        self.gang_size = int(world_size)
        self.hparams = dict(hparams)
        self.max_restarts = int(max_restarts)
        self.checkpoint_dir = checkpoint_dir
        self.framework = framework
        self._pending: List[Trial] = []
        self._restart_from: Optional[str] = None
        self._restart = False

    def initialize(self) -> None:
        self.num_trials = self.gang_size

    def _attempts(self) -> Dict[int, List[Trial]]:
        by_attempt: Dict[int, List[Trial]] = {}
        for trial in self.trial_store.values():
            by_attempt.setdefault(int(trial.info_dict.get("attempt", 0)), []).append(trial)
        return by_attempt

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        if self._pending:
            return self._pending.pop(0)
        attempts = self._attempts()
        if not attempts:
            return self._gang(0, None)
        last = max(attempts)
        members = attempts[last]
        if any(not t.done for t in members):
            return self.IDLE
        if self._restart:
            self._restart = False
            return self._gang(last + 1, self._restart_from)
        return None

    def _gang(self, attempt: int, resume_from: Optional[str]) -> Trial:
        self.num_trials = self.gang_size * (attempt + 1)
        self._pending = [
            self.create_trial(self.hparams, sample_type="rank", rank=rank,
                              world_size=self.gang_size, gang=f"attempt-{attempt}",
                              attempt=attempt, framework=self.framework,
                              checkpoint_dir=self.checkpoint_dir or (
                                  os.path.join(self.run_dir, "checkpoints")
                                  if self.run_dir else None),
                              resume_from=resume_from)
            for rank in range(self.gang_size)]
        return self._pending.pop(0)

    def gang_failed(self, trials: List[Trial], error: str) -> Optional[str]:
        attempt = max(int(t.info_dict.get("attempt", 0)) for t in trials)
        if any(t.info_dict.get("error_type") == "CheckpointDirError" for t in trials):
            return re.sub(r"^rank \d+ failed: ", "", error)  # no restart can help
        checkpoint = self.last_checkpoint()
        if attempt < self.max_restarts and checkpoint:
            self._restart, self._restart_from = True, checkpoint
            return None
        if self.max_restarts == 0:
            hint = ("the run does not restart (max_restarts=0); save checkpoints from the "
                    "chief and set max_restarts to resume from the last one")
        elif not checkpoint:
            hint = (f"no checkpoint to restart from (max_restarts={self.max_restarts}); have "
                    "the training function save one, e.g. "
                    "maggy_magic.distributed.torch.save_checkpoint(state), or pass "
                    "maggy_magic.distributed.tf.backup_and_restore() to fit's callbacks")
        else:
            hint = f"gave up after {attempt} restart(s) (max_restarts={self.max_restarts})"
        return f"distributed training failed on attempt {attempt}: {error}; {hint}"

    def last_checkpoint(self) -> Optional[str]:
        """The checkpoint a chief recorded last, over every attempt (None if none)."""
        found = None
        for _attempt, members in sorted(self._attempts().items()):
            for trial in members:
                if trial.info_dict.get("rank") == 0 and trial.info_dict.get("checkpoint"):
                    found = trial.info_dict["checkpoint"]
        return found

"""Early-stopping rules, checked against hand-built trial histories."""

from __future__ import annotations

import copy
from typing import List, Optional

import pytest

from maggy_magic.earlystop import (
    AbstractEarlyStop,
    MedianStoppingRule,
    NoStoppingRule,
    get_earlystop,
)
from maggy_magic.errors import ConfigError
from maggy_magic.trial import Trial

_ids = iter(range(10_000))


def trial(history: List[float], status: str = Trial.RUNNING, steps: Optional[List[int]] = None,
          final: Optional[float] = None) -> Trial:
    """A trial with metric ``history`` at steps 0, 1, ... (or ``steps``) and ``status``."""
    t = Trial({})
    t.trial_id = f"{next(_ids):04d}"
    for step, value in zip(steps if steps is not None else range(len(history)), history):
        t.append_metric(step, value)
    t.status = status
    if status in Trial.TERMINAL:
        t.final_metric = final if final is not None else (history[-1] if history else None)
    return t


def done(history, **kw) -> Trial:
    return trial(history, Trial.FINISHED, **kw)


def check(running: List[Trial], finished: List[Trial], direction="max", rule=None):
    to_check = {t.trial_id: t for t in running}
    return (rule or MedianStoppingRule()).earlystop_check(to_check, finished, direction)


def test_median_stops_a_worse_trial_and_keeps_a_better_one():
    peers = [done([0.5, 0.6, 0.7, 0.8]), done([0.4, 0.5, 0.6, 0.7]),
             done([0.6, 0.7, 0.8, 0.9])]
    bad = trial([0.1, 0.2, 0.3])         # best up to step 2: 0.3 < median 0.7
    good = trial([0.5, 0.7, 0.75])       # 0.75 > median of (0.7, 0.6, 0.8, 0.3)
    assert check([bad, good], peers) == [bad.trial_id]


def test_median_direction_min():
    peers = [done([0.9, 0.6, 0.5]), done([0.8, 0.5, 0.4]), done([1.0, 0.7, 0.6])]
    bad = trial([1.5, 1.2])              # best (lowest) up to step 1: 1.2 > median 0.6
    good = trial([0.7, 0.45])            # 0.45 < median
    assert check([bad, good], peers, direction="min") == [bad.trial_id]
    # the same histories under "max" flip the verdict
    assert check([bad, good], peers, direction="max") == [good.trial_id]


def test_no_peers_means_no_stop():
    lone = trial([0.0, 0.0, 0.0])
    assert check([lone], []) == []


def test_peers_that_did_not_reach_the_step_do_not_count():
    short = done([0.9, 0.9])             # only reached step 1
    behind = trial([0.1, 0.1, 0.1, 0.1])  # at step 3
    assert check([behind], [short]) == []
    assert check([behind], [done([0.9, 0.9, 0.9, 0.9])]) == [behind.trial_id]


def test_peers_are_compared_at_the_same_step_not_at_their_end():
    # The peer ends at 0.95 but had only 0.1 by step 2, where the running trial is.
    late_bloomer = done([0.1, 0.1, 0.1, 0.9, 0.95])
    running = trial([0.2, 0.3, 0.4])
    assert check([running], [late_bloomer]) == []


def test_running_trials_are_peers_of_each_other():
    leader = trial([0.8, 0.9, 0.95])
    laggard = trial([0.1, 0.2, 0.3])
    assert check([leader, laggard], []) == [laggard.trial_id]


def test_best_value_so_far_counts_not_the_latest():
    peers = [done([0.5, 0.5, 0.5])]
    dipped = trial([0.9, 0.2, 0.1])      # latest is bad, best so far 0.9 beats 0.5
    assert check([dipped], peers) == []


def test_equal_to_median_is_not_stopped():
    peers = [done([0.4, 0.4]), done([0.3, 0.5]), done([0.9, 0.9])]  # median 0.5
    assert check([trial([0.5, 0.5])], peers) == []
    assert check([trial([0.5, 0.49])], peers) == []
    assert check([trial([0.3, 0.49])], peers) != []


def test_flagged_done_or_silent_trials_are_never_stopped():
    peers = [done([0.9, 0.9, 0.9]), done([0.8, 0.9, 0.9])]
    flagged = trial([0.1, 0.1])
    flagged.early_stop = True
    ended = trial([0.1, 0.1], Trial.EARLY_STOPPED)
    silent = trial([])
    assert check([flagged, ended, silent], peers) == []


def test_min_peers_is_respected_and_validated():
    bad = trial([0.1, 0.1])
    peers = [done([0.9, 0.9]), done([0.8, 0.8])]
    assert check([bad], peers, rule=MedianStoppingRule(min_peers=3)) == []
    assert check([bad], peers, rule=MedianStoppingRule(min_peers=2)) == [bad.trial_id]
    with pytest.raises(ConfigError, match="min_peers"):
        MedianStoppingRule(min_peers=0)


def test_check_does_not_mutate_its_arguments():
    running = [trial([0.1, 0.2]), trial([0.5, 0.6])]
    finished = [done([0.9, 0.9, 0.9])]
    to_check = {t.trial_id: t for t in running}
    before = copy.deepcopy(([t.to_dict() for t in running], [t.to_dict() for t in finished]))
    keys = list(to_check)
    MedianStoppingRule().earlystop_check(to_check, finished, "max")
    after = ([t.to_dict() for t in running], [t.to_dict() for t in finished])
    for b, a in zip(before[0] + before[1], after[0] + after[1]):
        b.pop("duration"), a.pop("duration")
        assert a == b
    assert list(to_check) == keys and len(finished) == 1


def test_no_stopping_rule_never_stops():
    bad = trial([0.0, 0.0])
    assert check([bad], [done([1.0, 1.0])], rule=NoStoppingRule()) == []


@pytest.mark.parametrize("spec,cls", [("median", MedianStoppingRule),
                                      ("Median", MedianStoppingRule),
                                      ("none", NoStoppingRule), (None, NoStoppingRule),
                                      (MedianStoppingRule, MedianStoppingRule)])
def test_get_earlystop_by_name(spec, cls):
    rule = get_earlystop(spec)
    assert type(rule) is cls and isinstance(rule, AbstractEarlyStop)


def test_get_earlystop_returns_instances_and_rejects_unknown_names():
    rule = MedianStoppingRule(min_peers=4)
    assert get_earlystop(rule) is rule
    with pytest.raises(ConfigError) as excinfo:
        get_earlystop("medain")
    message = str(excinfo.value)
    assert "unknown early stopping policy 'medain'; did you mean 'median'?" in message

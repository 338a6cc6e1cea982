"""Optimizers: their decisions, driven by a minimal stand-in for the driver's bookkeeping;
and resume, driven through the real engine (driver, journal, load_trials, worker loops)."""

from __future__ import annotations

import collections
import json
import os
import threading
from typing import Any, Callable, Dict, List, Optional

import pytest
from conftest import journal

from maggy_magic import ExperimentInterrupted, HyperparameterOptConfig, experiment
from maggy_magic.backends import Backend, Launch
from maggy_magic.errors import ConfigError, MaggyError, SearchspaceError
from maggy_magic.optimizers import (
    AbstractOptimizer,
    Asha,
    GridSearch,
    RandomSearch,
    SingleRun,
    get_optimizer,
)
from maggy_magic.searchspace import Searchspace
from maggy_magic.trial import Trial
from maggy_magic.worker import WorkerLoop

IDLE = AbstractOptimizer.IDLE
#: More trials than any test needs: a buggy optimizer fails the test instead of hanging it.
LIMIT = 1000
#: Seconds the engine harness waits for something the engine must do (a bound for a
#: broken engine, so a test fails instead of hanging; never a claim about speed).
BOUND = 60.0


class Sim:
    """What the driver does around an optimizer: ids, stores, statuses, metrics."""

    def __init__(self, optimizer: AbstractOptimizer, searchspace: Optional[Searchspace],
                 num_trials: Optional[int] = None, direction: str = "max", seed=0,
                 store: Optional[Dict[str, Trial]] = None,
                 final: Optional[List[Trial]] = None):
        self.opt = optimizer
        self.store: Dict[str, Trial] = store if store is not None else {}
        self.final: List[Trial] = final if final is not None else []
        optimizer.validate(searchspace)
        optimizer.searchspace, optimizer.num_trials = searchspace, num_trials
        optimizer.direction, optimizer.seed = direction, seed
        optimizer.trial_store, optimizer.final_store = self.store, self.final
        optimizer.initialize()
        self.created: List[Trial] = []

    def ask(self, ended: Optional[Trial] = None):
        answer = self.opt.get_suggestion(ended)
        if answer is None or answer == IDLE:
            return answer
        trial = answer if isinstance(answer, Trial) else Trial(answer)
        trial.trial_id = f"{len(self.store):04d}"
        trial.status = Trial.RUNNING
        self.store[trial.trial_id] = trial
        self.created.append(trial)
        return trial

    def ask_all(self) -> List[Trial]:
        """Ask until the optimizer answers IDLE or None."""
        out = []
        while isinstance(answer := self.ask(), Trial):
            out.append(answer)
            assert len(self.store) <= LIMIT, "optimizer never stops suggesting"
        return out

    def finish(self, trial: Trial, value: Optional[float], status: str = Trial.FINISHED):
        if value is not None:
            trial.append_metric(len(trial.step_history), value)
        trial.final_metric, trial.status = value, status
        self.final.append(trial)

    def running(self) -> List[Trial]:
        return [t for t in self.store.values() if not t.done]


# -- the real engine, one trial ending at a time ------------------------------------------

class Gates:
    """In-process gates: each trial's training call waits until the test releases it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: Dict[str, threading.Event] = {}
        self._opened = False

    def _event(self, trial_id: str) -> threading.Event:
        with self._lock:
            event = self._events.setdefault(trial_id, threading.Event())
            if self._opened:
                event.set()
            return event

    def wait(self, trial_id: str) -> None:
        self._event(trial_id).wait()

    def release(self, trial_id: str) -> None:
        self._event(trial_id).set()

    def open_all(self) -> None:
        """Let every call return (the run is over: what they report is not heard)."""
        with self._lock:
            self._opened = True
            for event in self._events.values():
                event.set()


class ThreadWorkers(Backend):
    """Workers as :class:`WorkerLoop` threads of this process, over real sockets."""

    name = "threads"

    def __init__(self, gates: Gates):
        self.gates = gates
        self.threads: List[threading.Thread] = []

    def default_workers(self) -> int:
        return 1

    def start(self, launch: Launch) -> None:
        for index in range(launch.num_workers):
            loop = WorkerLoop(lambda: launch.function, str(index), launch.host, launch.port,
                              launch.secret, route_output=False)
            thread = threading.Thread(target=loop.run, name=f"test-worker-{index}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, grace: float = 5.0) -> None:
        self.gates.open_all()
        for thread in self.threads:
            thread.join(BOUND)
            assert not thread.is_alive(), f"{thread.name} outlived the run"


#: The run in progress: what ``gated`` waits on and scores with (workers are threads here).
CURRENT: Dict[str, Any] = {}


def gated(hparams, reporter, budget=None):
    """The training function of engine runs: waits for its release, then scores."""
    CURRENT["gates"].wait(reporter.trial_id)
    return CURRENT["objective"](hparams, budget)


def oldest(running: List[str]) -> str:
    return running[0]


class Conductor:
    """Drives one run of the real engine (``experiment.run``: events → journal, driver,
    ``load_trials`` on resume) and lets one running trial end at a time.

    After every change it waits until the driver has acted on it (a call posted to the
    driver's loop runs only after the loop has handled what came before), then releases
    the trial that ``pick`` chooses among the running ones (in the order they started),
    so a run is the same whatever the threads' timing. ``interrupt_after``: once that
    many trials ended, the run is interrupted (the running trials stay incomplete).
    """

    def __init__(self, release: Callable[[str], None], workers: int,
                 interrupt_after: Optional[int] = None,
                 pick: Callable[[List[str]], str] = oldest):
        self.release, self.workers = release, workers
        self.interrupt_after, self.pick = interrupt_after, pick
        self.cond = threading.Condition()
        self.joined = 0
        self.running: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self.ended: List[str] = []
        self.interrupted = False

    def listen(self, event: Dict[str, Any]) -> None:
        with self.cond:
            kind = event["type"]
            if kind == "worker_joined":
                self.joined += 1
            elif kind == "trial_started":
                self.running[event["trial"]] = None
            elif kind in ("trial_finished", "trial_failed"):
                self.running.pop(event["trial"], None)
                self.ended.append(event["trial"])
            self.cond.notify_all()

    def _until(self, driver, ready: Callable[[], bool], what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: ready() or driver.done, BOUND):
                raise AssertionError(f"the engine never got there: {what}")

    def _settle(self, driver) -> None:
        settled = []

        def mark() -> None:
            with self.cond:
                settled.append(True)
                self.cond.notify_all()

        driver.post(mark)
        self._until(driver, lambda: bool(settled), "the driver's loop ran a posted call")

    def wait(self, driver) -> None:
        self._until(driver, lambda: self.joined >= self.workers, "every worker joined")
        while True:
            self._settle(driver)
            if driver.done:
                return
            with self.cond:
                ended, running = len(self.ended), list(self.running)
            if ended == self.interrupt_after:
                self.interrupted = True
                driver.interrupt("interrupted by the test")
                driver.wait(BOUND)
                return
            assert running, "nothing runs and the driver did not end the run"
            trial_id = self.pick(running)
            self.release(trial_id)
            self._until(driver, lambda n=ended: len(self.ended) > n, f"trial {trial_id} ended")


def engine_run(optimizer: str, space: Searchspace, objective, *, num_trials: int = 8,
               workers: int = 3, direction: str = "max", seed: Optional[int] = 0,
               interrupt_after: Optional[int] = None, resume: Optional[str] = None,
               pick: Callable[[List[str]], str] = oldest,
               on_driver: Optional[Callable[[Any, Any], None]] = None, **options) -> str:
    """Run ``optimizer`` through the real engine with in-process worker loops; returns the
    run directory. ``objective(params, budget)`` is each trial's metric; ``on_driver`` as
    :func:`experiment.run`'s."""
    gates = Gates()
    CURRENT.update(gates=gates, objective=objective)
    conductor = Conductor(gates.release, workers, interrupt_after, pick)
    config = HyperparameterOptConfig(
        num_trials=num_trials, optimizer=optimizer, optimizer_options=options,
        searchspace=space, direction=direction, seed=seed, es_policy="none",
        workers=workers, name=f"engine-{optimizer}", backend=ThreadWorkers(gates),
        resume=resume)
    try:
        result = experiment.run(gated, config, listeners=[conductor.listen],
                                wait=conductor.wait, on_driver=on_driver)
    except ExperimentInterrupted as exc:
        assert conductor.interrupted, exc
        result = exc.result
    assert conductor.interrupted or result.state == "finished", result.error
    return result.run_dir


def journal_runs(run_dir: str) -> List[List[Dict[str, Any]]]:
    """The journal's events, split into one list per run (the first and each resume)."""
    runs: List[List[Dict[str, Any]]] = []
    for event in journal(run_dir):
        if event["type"] == "run_started":
            runs.append([])
        runs[-1].append(event)
    return runs


def trial_table(run_dir: str) -> Dict[str, Dict[str, Any]]:
    """Trial id → what its (last) start says: params, budget, info; over every run."""
    table = {}
    for event in journal(run_dir):
        if event["type"] == "trial_started":
            table[event["trial"]] = {k: event[k] for k in ("params", "budget", "info")}
    return dict(sorted(table.items()))


def resume_checked(first: str, resume: Callable[[], str]) -> str:
    """Resume the interrupted run ``first`` (``resume()`` runs it again with the same
    settings and ``resume=first``) and check what every resume must do: trials that ended
    keep their record (start time, value) and never start again; the ones that were
    running start again; nothing starts twice in the resumed part."""
    before = journal_runs(first)[-1]
    ended = {e["trial"]: e for e in before if e["type"] in ("trial_finished", "trial_failed")}
    started = {e["trial"]: e for e in before if e["type"] == "trial_started"}
    assert before[-1]["type"] == "run_finished" and before[-1]["state"] == "interrupted"
    run_dir = resume()
    assert run_dir == first
    after = journal_runs(run_dir)[-1]
    assert after[0]["resumed"] is True and after[-1]["state"] == "finished"
    again = [e["trial"] for e in after if e["type"] == "trial_started"]
    assert not set(again) & set(ended), "resume started a trial that had ended"
    assert len(again) == len(set(again)), "resume started a trial twice"
    assert set(started) - set(ended) <= set(again), "an interrupted trial was not rerun"
    with open(os.path.join(run_dir, "result.json")) as handle:
        records = {r["trial"]: r for r in json.load(handle)["trials"]}
    for trial_id, event in ended.items():  # kept as it was: same start, same value
        assert records[trial_id]["start"] == started[trial_id]["t"]
        assert records[trial_id]["value"] == event.get("value")
        assert records[trial_id]["state"] == event.get("state", Trial.FAILED)
    return run_dir


def resume_run(first: str, *args, **kwargs) -> str:
    """:func:`resume_checked` with :func:`engine_run` (same arguments)."""
    return resume_checked(first, lambda: engine_run(*args, resume=first, **kwargs))


SPACE = Searchspace(x=("DOUBLE", [0.0, 1.0]), n=("INTEGER", [1, 100]),
                    act=("CATEGORICAL", ["relu", "tanh", "elu"]))


# -- random search ------------------------------------------------------------------------

def test_random_creates_exactly_num_trials_then_none():
    sim = Sim(RandomSearch(), SPACE, num_trials=7)
    trials = sim.ask_all()
    assert len(trials) == 7 and sim.ask() is None
    for t in trials:
        assert 0.0 <= t.params["x"] <= 1.0 and 1 <= t.params["n"] <= 100
        assert t.params["act"] in ("relu", "tanh", "elu")
    assert len({t.params["x"] for t in trials}) == 7
    assert [t.info_dict["index"] for t in trials] == list(range(7))


def test_random_is_deterministic_per_seed():
    first = [t.params for t in Sim(RandomSearch(), SPACE, 5, seed=42).ask_all()]
    again = [t.params for t in Sim(RandomSearch(), SPACE, 5, seed=42).ask_all()]
    other = [t.params for t in Sim(RandomSearch(), SPACE, 5, seed=43).ask_all()]
    assert first == again
    assert first != other


def engine_score(params, budget):
    return params["x"] * (budget or 1)


def newest(running: List[str]) -> str:
    return running[-1]


def by_index(table: Dict[str, Dict[str, Any]], key: str = "index"):
    """``info[key]`` → params, checking that no index occurs twice."""
    indices = [t["info"][key] for t in table.values()]
    assert len(indices) == len(set(indices)), f"an {key} ran twice: {sorted(indices)}"
    return {t["info"][key]: t["params"] for t in table.values()}


def test_random_without_seed_records_one_and_resume_reuses_it():
    first = engine_run("randomsearch", SPACE, engine_score, num_trials=6, seed=None,
                       interrupt_after=2)
    seeds = {t["info"]["seed"] for t in trial_table(first).values()}
    assert len(seeds) == 1 and None not in seeds
    resumed = resume_run(first, "randomsearch", SPACE, engine_score, num_trials=6, seed=None)
    assert {t["info"]["seed"] for t in trial_table(resumed).values()} == seeds
    reference = engine_run("randomsearch", SPACE, engine_score, num_trials=6,
                           seed=seeds.pop())
    assert by_index(trial_table(resumed)) == by_index(trial_table(reference))


@pytest.mark.parametrize("k", [0, 1, 4, 5])
@pytest.mark.parametrize("pick", [oldest, newest])
def test_random_resume_creates_exactly_the_missing_trials(k, pick):
    # 2 workers, each with a trial queued behind its running one: ending the newest
    # first leaves an earlier trial created, queued, and never started
    full = by_index(trial_table(engine_run("randomsearch", SPACE, engine_score,
                                           num_trials=6, seed=9, workers=2)))
    assert sorted(full) == list(range(6))
    first = engine_run("randomsearch", SPACE, engine_score, num_trials=6, seed=9,
                       workers=2, interrupt_after=k, pick=pick)
    resumed = resume_run(first, "randomsearch", SPACE, engine_score, num_trials=6, seed=9,
                         workers=2, pick=pick)
    assert by_index(trial_table(resumed)) == full


def test_random_rejects_bad_settings():
    with pytest.raises(ConfigError, match="num_trials"):
        Sim(RandomSearch(), SPACE, num_trials=0)
    with pytest.raises(SearchspaceError, match="non-empty search space"):
        Sim(RandomSearch(), Searchspace(), num_trials=3)
    with pytest.raises(ConfigError, match="no option 'seeed'"):
        RandomSearch(seeed=1)


# -- grid search --------------------------------------------------------------------------

GRID = Searchspace(a=("INTEGER", [1, 3]), b=("CATEGORICAL", ["x", "y"]),
                   c=("DISCRETE", [0.1, 0.2]))


def test_grid_runs_every_combination_once_in_order_ignoring_num_trials():
    sim = Sim(GridSearch(), GRID, num_trials=2)
    trials = sim.ask_all()
    assert sim.ask() is None
    assert [t.params for t in trials] == GRID.grid()
    assert len(trials) == 12 and sim.opt.num_trials == 12
    assert [t.info_dict["grid_index"] for t in trials] == list(range(12))


@pytest.mark.parametrize("pick", [oldest, newest])
def test_grid_resume_runs_only_the_missing_points(pick):
    score = lambda params, budget: float(params["a"])  # noqa: E731
    first = engine_run("gridsearch", GRID, score, workers=2, interrupt_after=5, pick=pick)
    before = by_index(trial_table(first), "grid_index")
    assert 5 <= len(before) < 12
    resumed = resume_run(first, "gridsearch", GRID, score, workers=2, pick=pick)
    points = by_index(trial_table(resumed), "grid_index")
    assert points == dict(enumerate(GRID.grid()))


def test_grid_over_double_fails_in_validate():
    opt = GridSearch()
    with pytest.raises(SearchspaceError, match="cannot enumerate DOUBLE parameter 'x'"):
        opt.validate(SPACE)


# -- single run ---------------------------------------------------------------------------

def test_single_run_makes_one_empty_trial():
    sim = Sim(SingleRun(), None, num_trials=10)
    trial = sim.ask()
    assert trial.params == {} and sim.opt.num_trials == 1
    assert sim.ask() is None
    sim.finish(trial, 0.3)
    assert sim.ask(trial) is None and len(sim.store) == 1


# -- ASHA ---------------------------------------------------------------------------------

def test_asha_promotes_top_fraction_for_max():
    sim = Sim(Asha(), SPACE, num_trials=4, direction="max")
    base = sim.ask_all()
    assert len(base) == 4 and sim.ask() == IDLE
    assert all(t.budget == 1 and t.info_dict["rung"] == 0 for t in base)
    assert all(t.info_dict["parent"] is None for t in base)
    values = [0.1, 0.9, 0.5, 0.3]

    sim.finish(base[0], values[0])
    assert sim.ask(base[0]) == IDLE  # n0 = 1: floor(1/2) = 0 promotions
    sim.finish(base[1], values[1])
    promo = sim.ask(base[1])
    assert promo.params == base[1].params and promo.budget == 2
    assert promo.info_dict["rung"] == 1 and promo.info_dict["parent"] == base[1].trial_id
    sim.finish(base[2], values[2])
    assert sim.ask(base[2]) == IDLE  # top 1 of 3 is base[1], already promoted
    sim.finish(base[3], values[3])
    promo2 = sim.ask(base[3])  # top 2 of 4: base[1] (done) and base[2]
    assert promo2.info_dict["parent"] == base[2].trial_id
    assert sim.ask() == IDLE


def test_asha_promotes_top_fraction_for_min():
    sim = Sim(Asha(), SPACE, num_trials=4, direction="min")
    base = sim.ask_all()
    for t, v in zip(base, [0.1, 0.9, 0.5, 0.3]):
        sim.finish(t, v)
    parents = [sim.ask().info_dict["parent"] for _ in range(2)]
    assert parents == [base[0].trial_id, base[3].trial_id]
    assert sim.ask() == IDLE


def test_asha_promotes_from_the_highest_rung_first():
    sim = Sim(Asha(), SPACE, num_trials=4)
    base = sim.ask_all()
    sim.finish(base[0], 0.2)
    sim.finish(base[1], 0.8)
    r1a = sim.ask()
    sim.finish(r1a, 0.9)
    sim.finish(base[2], 0.7)
    sim.finish(base[3], 0.1)
    r1b = sim.ask()  # rung 1 has 1 finished: no promotion; rung 0 top 2 -> base[2]
    assert (r1b.info_dict["rung"], r1b.info_dict["parent"]) == (1, base[2].trial_id)
    sim.finish(r1b, 0.5)
    nxt = sim.ask()  # rung 1 now promotes r1a before anything else
    assert (nxt.info_dict["rung"], nxt.info_dict["parent"], nxt.budget) == (2, r1a.trial_id, 4)


def test_asha_failed_without_metric_is_never_promoted_but_early_stopped_is():
    sim = Sim(Asha(), SPACE, num_trials=4)
    base = sim.ask_all()
    sim.finish(base[0], None, Trial.FAILED)
    sim.finish(base[1], None, Trial.FAILED)
    assert sim.ask() == IDLE  # top 1 of 2 has no metric
    sim.finish(base[2], 0.4, Trial.EARLY_STOPPED)
    sim.finish(base[3], None, Trial.FAILED)
    promo = sim.ask()  # top 2 of 4: only base[2] has a metric
    assert promo.info_dict["parent"] == base[2].trial_id
    sim.finish(promo, 0.6)
    assert sim.ask() is None


def run_to_end(sim: Sim, score) -> Sim:
    """Ask for everything available, finish the oldest running trial, repeat until None."""
    for _ in range(LIMIT):
        sim.ask_all()
        running = sim.running()
        if not running:
            assert sim.ask() is None
            return sim
        oldest_trial = running[0]
        sim.finish(oldest_trial, score(oldest_trial))
    raise AssertionError("optimizer never answered None")


def score(trial: Trial) -> float:
    return trial.params["x"] * trial.budget


@pytest.mark.parametrize("direction", ["max", "min"])
def test_asha_full_run_invariants(direction):
    sim = run_to_end(Sim(Asha(reduction_factor=2, resource_min=1, resource_max=5), SPACE,
                         num_trials=8, direction=direction), score)
    trials = list(sim.store.values())
    budgets = {t.info_dict["rung"]: t.budget for t in trials}
    assert budgets == {0: 1, 1: 2, 2: 4, 3: 5}  # capped at resource_max
    counts = [sum(1 for t in trials if t.info_dict["rung"] == k) for k in range(4)]
    assert counts == [8, 4, 2, 1]
    parents = [t.info_dict["parent"] for t in trials if t.info_dict["parent"] is not None]
    assert len(parents) == len(set(parents))  # each trial promoted at most once
    for t in trials:
        parent = t.info_dict["parent"]
        if parent is None:
            continue
        rung = sim.store[parent].info_dict["rung"]
        peers = [p for p in trials if p.info_dict["rung"] == rung]
        ranked = sorted(peers, key=lambda p: p.final_metric, reverse=direction == "max")
        assert sim.store[parent] in ranked[:len(peers) // 2]
        assert t.params == sim.store[parent].params
    best_x = (max if direction == "max" else min)(t.params["x"] for t in trials)
    top = [t for t in trials if t.info_dict["rung"] == 3][0]
    assert top.params["x"] == best_x


ASHA_OPTIONS = dict(reduction_factor=2, resource_min=1, resource_max=4)


@pytest.mark.parametrize("interrupt_after", [0, 1, 3, 6, 9, 12])
def test_asha_resume_rebuilds_promotions_from_the_journal(interrupt_after):
    def run(**kwargs):
        return engine_run("asha", SPACE, engine_score, num_trials=8, seed=5, workers=3,
                          **ASHA_OPTIONS, **kwargs)

    whole = trial_table(run())
    assert [sum(t["info"]["rung"] == k for t in whole.values()) for k in range(3)] == [8, 4, 2]
    first = run(interrupt_after=interrupt_after)
    resumed = resume_run(first, "asha", SPACE, engine_score, num_trials=8, seed=5, workers=3,
                         **ASHA_OPTIONS)
    # the resumed run made the decisions the uninterrupted one made: same trials, same
    # params, budgets, rungs and parents
    assert trial_table(resumed) == whole


def test_asha_uses_budget_and_rejects_bad_options():
    assert Asha.uses_budget is True
    bad = [
        (dict(reduction_factor=1), "reduction_factor must be an integer >= 2"),
        (dict(reduction_factor=2.5), "reduction_factor must be an integer >= 2"),
        (dict(reduction_factor=True), "reduction_factor must be an integer >= 2"),
        (dict(resource_min=0), "resource_min must be a number above 0"),
        (dict(resource_min=4, resource_max=4), "must be below resource_max"),
        (dict(resource_min=8, resource_max=2), "must be below resource_max"),
        (dict(reduction_factr=3), "did you mean 'reduction_factor'"),
    ]
    for kwargs, fragment in bad:
        with pytest.raises(ConfigError) as excinfo:
            Asha(**kwargs)
        assert fragment in str(excinfo.value), kwargs
        assert "\n" not in str(excinfo.value)


def test_asha_needs_num_trials():
    with pytest.raises(ConfigError, match="num_trials"):
        Sim(Asha(), SPACE, num_trials=None)


# -- get_optimizer ------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [
    ("randomsearch", RandomSearch), ("random", RandomSearch), ("RandomSearch", RandomSearch),
    ("gridsearch", GridSearch), ("grid", GridSearch), ("asha", Asha),
    ("none", SingleRun), ("single", SingleRun), (None, SingleRun), (Asha, Asha),
])
def test_get_optimizer_by_name(name, cls):
    assert type(get_optimizer(name)) is cls


def test_get_optimizer_passes_options_and_returns_instances_as_is():
    asha = get_optimizer("asha", reduction_factor=3, resource_max=9)
    assert (asha.reduction_factor, asha.resource_min, asha.resource_max) == (3, 1, 9)
    mine = RandomSearch()
    assert get_optimizer(mine) is mine
    with pytest.raises(ConfigError, match="constructor"):
        get_optimizer(mine, reduction_factor=3)


def test_get_optimizer_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError) as excinfo:
        get_optimizer("randomserch")
    message = str(excinfo.value)
    assert message.startswith("unknown optimizer 'randomserch'; did you mean 'randomsearch'?")
    assert isinstance(excinfo.value, MaggyError)
    with pytest.raises(ConfigError, match="valid: "):
        get_optimizer("bayes-opt-xyz")
    with pytest.raises(ConfigError, match="must be a name"):
        get_optimizer(42)

"""tpe, gp, hyperband, bohb and de: the optimizer contract, driven like the driver does,
plus conditional parameters across every optimizer and short end-to-end runs."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from typing import Callable, List, Optional

import optuna
import pytest
from conftest import journal
from test_optimizers import LIMIT, Sim, engine_run, resume_run, trial_table

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.errors import ConfigError, SearchspaceError, TrainFunctionError
from maggy_magic.optimizers import (
    BOHB,
    GP,
    OPTIMIZERS,
    TPE,
    DifferentialEvolution,
    Hyperband,
    bayes,
    get_optimizer,
)
from maggy_magic.optimizers.randomsearch import sample_config
from maggy_magic.trainfn import build_kwargs, call_plan, check_signature
from maggy_magic.trial import Trial

NEW = ["tpe", "gp", "hyperband", "bohb", "de"]
#: gp refits a Gaussian process per suggestion (seconds each on a busy machine).
NEW_P = [pytest.param(n, marks=pytest.mark.slow) if n == "gp" else n for n in NEW]
#: Quick settings per optimizer (gp fits a model per suggestion: keep its runs short).
QUICK = {"tpe": dict(num_warmup_trials=5), "gp": dict(num_warmup_trials=4),
         "hyperband": dict(reduction_factor=3, resource_max=9),
         "bohb": dict(reduction_factor=3, resource_max=9, min_points_in_model=3),
         "de": dict(population=5)}

ALL_TYPES = Searchspace(lr=("DOUBLE", [1e-5, 1e-1], "log"), x=("DOUBLE", [-1.0, 1.0]),
                        units=("INTEGER", [2, 512], "log"), depth=("INTEGER", [1, 4]),
                        bs=("DISCRETE", [16, 32, 64]),
                        act=("CATEGORICAL", ["relu", None, [1, 2], {"k": "v"}]))


def drive(sim: Sim, objective: Callable[[Trial], Optional[float]], workers: int,
          order: str = "oldest") -> Sim:
    """Keep ``workers`` trials running; end one at a time until the optimizer answers None."""
    rng = random.Random(0)
    for _ in range(LIMIT):
        while len(sim.running()) < workers:
            answer = sim.ask()
            if not isinstance(answer, Trial):
                break
        running = sim.running()
        if not running:
            assert sim.ask() is None
            return sim
        ending = running[0] if order == "oldest" else rng.choice(running)
        value = objective(ending)
        sim.finish(ending, value, Trial.FINISHED if value is not None else Trial.FAILED)
    raise AssertionError("optimizer never answered None")


def make(name: str, **extra) -> object:
    return get_optimizer(name, **{**QUICK[name], **extra})


def in_space(space: Searchspace, params: dict) -> bool:
    for name, value in params.items():
        p = space[name]
        if p.type == "DOUBLE" and not (isinstance(value, float)
                                       and p.values[0] <= value <= p.values[1]):
            return False
        if p.type == "INTEGER" and not (type(value) is int
                                        and p.values[0] <= value <= p.values[1]):
            return False
        if p.type in ("DISCRETE", "CATEGORICAL") and value not in p.values:
            return False
    return set(params) == set(space.prune(params)) == set(space.keys()) - \
        {n for n in space.keys() if not space[n].active(params)}


# -- contract: inside the space, no duplicates --------------------------------------------

@pytest.mark.parametrize("name", NEW_P)
def test_suggestions_stay_inside_a_space_of_every_type(name):
    num = 7 if name == "gp" else 30
    sim = drive(Sim(make(name), ALL_TYPES, num_trials=num, direction="min", seed=4),
                lambda t: abs(t.params["x"]) + math.log10(t.params["lr"]) / 10, workers=3)
    trials = list(sim.store.values())
    assert len(trials) >= num
    for t in trials:
        assert set(t.params) == set(ALL_TYPES.keys()), t.params
        assert in_space(ALL_TYPES, t.params), t.params
    lrs = [t.params["lr"] for t in trials]
    assert min(lrs) < 1e-3  # log scale: a linear draw would almost never go this low
    assert {json.dumps(t.params["act"]) for t in trials} >= {'"relu"', "null"} or \
        len({json.dumps(t.params["act"]) for t in trials}) >= 2


SMALL = Searchspace(a=("INTEGER", [1, 4]), b=("CATEGORICAL", ["x", "y", "z"]),
                    c=("DISCRETE", [0.5, 1.5]))  # 24 configurations


@pytest.mark.parametrize("name", NEW_P)
def test_no_duplicate_configurations_while_the_space_has_unseen_ones(name):
    # hyperband runs whole brackets: 17 configurations for its first pass (<= 24)
    num = {"gp": 8, "hyperband": 17, "bohb": 17}.get(name, 20)
    sim = drive(Sim(make(name), SMALL, num_trials=num, direction="max", seed=2),
                lambda t: t.params["a"] + (t.params["b"] == "y"), workers=3)
    fresh = [t for t in sim.store.values() if t.info_dict.get("parent") is None]
    keys = [json.dumps(t.params, sort_keys=True) for t in fresh]
    assert len(keys) == len(set(keys)) and len(keys) >= num


# -- direction -----------------------------------------------------------------------------

def distance(trial: Trial) -> float:
    return (trial.params["x"] - 0.3) ** 2 + (trial.params["y"] + 0.2) ** 2


XY = Searchspace(x=("DOUBLE", [-1.0, 1.0]), y=("DOUBLE", [-1.0, 1.0]))


@pytest.mark.parametrize("name,num", [("tpe", 40), ("de", 40),
                                      pytest.param("gp", 16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("direction", ["min", "max"])
def test_model_based_search_improves_in_the_configured_direction(name, num, direction):
    sign = 1 if direction == "min" else -1
    sim = drive(Sim(make(name), XY, num_trials=num, direction=direction, seed=7),
                lambda t: sign * distance(t), workers=2)
    created = sim.created
    first = sum(distance(t) for t in created[:8]) / 8
    last = sum(distance(t) for t in created[-8:]) / 8
    # the objective is best at (0.3, -0.2) under either direction: later trials close in
    # (an optimizer that ignored direction would flee that point in one of the two cases)
    # (gp gets 16 trials only, half of them warmup or early model points: a looser bar)
    assert last < first * (0.8 if name == "gp" else 0.6)


@pytest.mark.parametrize("name", ["hyperband", "bohb"])
@pytest.mark.parametrize("direction", ["min", "max"])
def test_brackets_promote_the_best_of_each_rung(name, direction):
    sign = 1 if direction == "min" else -1
    sim = drive(Sim(make(name), XY, num_trials=17, direction=direction, seed=1),
                lambda t: sign * distance(t) / t.budget, workers=3, order="random")
    trials = list(sim.store.values())
    for t in trials:
        if t.info_dict["parent"] is None:
            continue
        parent = sim.store[t.info_dict["parent"]]
        peers = [p for p in trials if p.info_dict["bracket"] == parent.info_dict["bracket"]
                 and p.info_dict["rung"] == parent.info_dict["rung"]]
        ranked = sorted(peers, key=lambda p: p.final_metric, reverse=direction == "max")
        keep = sum(1 for q in trials if q.info_dict["bracket"] == t.info_dict["bracket"]
                   and q.info_dict["rung"] == t.info_dict["rung"])
        assert parent in ranked[:keep] and t.params == parent.params


# -- Hyperband budgets -------------------------------------------------------------------

def test_hyperband_plan_matches_the_paper():
    hb = Hyperband(reduction_factor=3, resource_min=1, resource_max=9)
    assert hb.plan() == [(2, [(9, 1), (3, 3), (1, 9)]), (1, [(5, 3), (1, 9)]), (0, [(3, 9)])]
    capped = Hyperband(reduction_factor=2, resource_min=1, resource_max=5)
    assert [rungs for _, rungs in capped.plan()][0] == [(8, 1), (4, 2), (2, 4), (1, 5)]
    assert capped.plan()[-1] == (0, [(4, 5)])


@pytest.mark.parametrize("name", ["hyperband", "bohb"])
def test_hyperband_runs_every_bracket_exactly_as_planned(name):
    opt = make(name)
    sim = drive(Sim(opt, XY, num_trials=17, direction="min", seed=3),
                lambda t: distance(t) / t.budget, workers=4)
    counts = {}
    for t in sim.store.values():
        key = (t.info_dict["bracket"], t.info_dict["rung"], t.budget)
        counts[key] = counts.get(key, 0) + 1
    # 17 configurations: brackets s=2 (9), s=1 (5), s=0 (3), each run in full
    assert counts == {(0, 0, 1): 9, (0, 1, 3): 3, (0, 2, 9): 1, (1, 1, 3): 5, (1, 2, 9): 1,
                      (2, 2, 9): 3}
    assert sim.ask() is None and Hyperband.uses_budget and BOHB.uses_budget


def test_bohb_proposes_from_the_model_once_a_budget_has_enough_results():
    sim = drive(Sim(make("bohb", random_fraction=0.0), XY, num_trials=35, direction="min",
                    seed=5), lambda t: distance(t) / t.budget, workers=2)
    kinds = [t.info_dict["sample_type"] for t in sim.created if t.info_dict["parent"] is None]
    assert kinds[:3] == ["random"] * 3 and "model" in kinds
    model = [t for t in sim.created if t.info_dict["sample_type"] == "model"]
    randoms = [t for t in sim.created if t.info_dict["sample_type"] == "random"]
    assert sum(map(distance, model)) / len(model) < sum(map(distance, randoms)) / len(randoms)


# -- asynchronous awareness ------------------------------------------------------------

def spread(trials: List[Trial]) -> float:
    return min(math.dist((a.params["x"], a.params["y"]), (b.params["x"], b.params["y"]))
               for a, b in itertools.combinations(trials, 2))


@pytest.mark.parametrize("name", ["tpe", pytest.param("gp", marks=pytest.mark.slow)])
def test_running_trials_are_accounted_for(name):
    def pending_batch(impute):
        sim = Sim(make(name, impute_strategy=impute, random_fraction=0.0), XY,
                  num_trials=40, direction="min", seed=11)
        for _ in range(8):  # warmup with results
            trial = sim.ask()
            sim.finish(trial, distance(trial))
        batch = [sim.ask() for _ in range(6)]  # six workers, no result yet
        assert all(t.info_dict["sample_type"] == "model" for t in batch)
        return batch

    liar = pending_batch("cl_worst")
    assert spread(liar) > 0.02
    keys = {json.dumps(t.params, sort_keys=True) for t in liar}
    assert len(keys) == 6
    if name == "gp":  # without the liar the GP answers (almost) the same point each time
        assert spread(pending_batch("none")) < spread(liar) / 10


@pytest.mark.slow
@pytest.mark.parametrize("repeats,kind", [(1, "model"), (bayes.REPEAT_ASKS, "random")])
def test_gp_asks_its_model_again_when_it_answers_a_tried_point(monkeypatch, repeats, kind):
    """The GP's acquisition search starts at the best trial and may return it unchanged
    (Optuna >= 4.6 does so exactly): the repeat is told the worst result and the GP asked
    again; only a GP that keeps repeating itself gets a random draw instead."""
    sim = Sim(make("gp", random_fraction=0.0), XY, num_trials=20, direction="min", seed=3)
    for _ in range(6):
        trial = sim.ask()
        sim.finish(trial, distance(trial))
    best = min(sim.final, key=lambda t: t.final_metric)
    worst = max(t.final_metric for t in sim.final)
    gp = sim.opt._sampler
    answers, told = [], []

    def sample_relative(study, otrial, search_space):
        answer = gp_sample_relative(study, otrial, search_space)
        if len(answers) < repeats:  # the GP answers the best trial's point again
            answer = dict(best.params)
        answers.append(answer)
        return answer

    def tell(study, otrial, *args, **kwargs):
        if study.sampler is gp:  # the GP's copy, not the ledger
            told.append((study.trials[otrial.number].params, args))
        return study_tell(study, otrial, *args, **kwargs)

    gp_sample_relative, study_tell = gp.sample_relative, optuna.study.Study.tell
    monkeypatch.setattr(gp, "sample_relative", sample_relative)
    monkeypatch.setattr(optuna.study.Study, "tell", tell)
    new = sim.ask()
    assert len(answers) == min(repeats + 1, bayes.REPEAT_ASKS)
    assert told == [(best.params, (worst,))] * repeats  # each repeat told the worst result
    assert new.info_dict["sample_type"] == kind
    assert new.params != best.params
    if kind == "model":
        assert new.params == answers[-1]  # the GP's own second answer


# -- resume --------------------------------------------------------------------------

def engine_objective(params, budget):
    return ((params["x"] - 0.3) ** 2 + (params["y"] + 0.2) ** 2) / (budget or 1)


@pytest.mark.parametrize("name", ["hyperband", "bohb", "de"])
@pytest.mark.parametrize("interrupt_after", [2, 7, 15])
def test_resume_continues_exactly_where_the_run_stopped(name, interrupt_after):
    # the real engine (driver, journal, load_trials), one gated trial ending at a time
    def run(**kwargs):
        return engine_run(name, XY, engine_objective, num_trials=17, direction="min",
                          seed=8, workers=3, **QUICK[name], **kwargs)

    whole = trial_table(run())
    first = run(interrupt_after=interrupt_after)
    resumed = resume_run(first, name, XY, engine_objective, num_trials=17, direction="min",
                         seed=8, workers=3, **QUICK[name])
    # the same trials as the uninterrupted run: params, budgets, brackets, rungs,
    # parents, generations, members, vectors
    assert trial_table(resumed) == whole


def test_tpe_resume_rebuilds_its_model_from_the_journal():
    def run(**kwargs):
        return engine_run("tpe", XY, engine_objective, num_trials=20, direction="min",
                          workers=2, **QUICK["tpe"], **kwargs)

    first = run(seed=6, interrupt_after=9)
    before = trial_table(first)
    assert len(before) == 11  # 9 ended, 2 running at the interrupt
    model = {}

    def look(driver, backend):  # the optimizer as resume set it up, before any worker
        opt = driver.optimizer
        model.update(seed=opt.seed, results=opt._results, running=len(opt._running()))

    resumed = resume_run(first, "tpe", XY, engine_objective, num_trials=20, direction="min",
                         workers=2, seed=None, on_driver=look, **QUICK["tpe"])
    # the seed came from the journal, the 9 results and 2 running trials reached the model
    assert model == {"seed": 6, "results": 9, "running": 2}
    after = trial_table(resumed)
    assert len(after) == 20 and set(before) <= set(after)
    assert all(after[t] == before[t] for t in before)
    keys = [json.dumps(t["params"], sort_keys=True) for t in after.values()]
    assert len(keys) == len(set(keys))
    # warm-up was not started over: every new trial comes from the model (or is one of
    # its random share, which warm-up is not)
    new = [after[t]["info"]["sample_type"] for t in sorted(set(after) - set(before))]
    assert len(new) == 9 and "warmup" not in new and "model" in new


# -- conditional parameters, every optimizer -------------------------------------------

COND = Searchspace(optimizer=("CATEGORICAL", ["sgd", "adam"]),
                   momentum=("DOUBLE", [0.0, 0.99], {"optimizer": "sgd"}),
                   nesterov=("CATEGORICAL", [True, False], {"optimizer": "sgd"}),
                   beta=("DISCRETE", [0.9, 0.99], {"optimizer": "adam"}),
                   depth=("INTEGER", [1, 3]))
GRID_COND = Searchspace(optimizer=("CATEGORICAL", ["sgd", "adam"]),
                        momentum=("DISCRETE", [0.0, 0.9], {"optimizer": "sgd"}),
                        depth=("INTEGER", [1, 3]))


@pytest.mark.parametrize("name", ["random", "grid", "asha"] + NEW_P)
def test_every_optimizer_honours_conditions(name):
    space = GRID_COND if name == "grid" else COND
    num = 8 if name == "gp" else 24
    opt = get_optimizer(name, **QUICK.get(name, {}))
    sim = drive(Sim(opt, space, num_trials=num, direction="max", seed=1),
                lambda t: t.params.get("momentum", 0.5) + t.params["depth"], workers=3)
    branches = set()
    for t in sim.store.values():
        sgd = t.params["optimizer"] == "sgd"
        branches.add(sgd)
        assert ("momentum" in t.params) is sgd, t.params
        if space is COND:
            assert ("nesterov" in t.params) is sgd and ("beta" in t.params) is not sgd
        assert in_space(space, t.params)
    assert branches == {True, False}
    if name == "grid":
        assert len(sim.store) == 9  # sgd: 2 momenta x 3 depths; adam: 3 depths


def test_conditional_params_reach_the_training_function_only_when_active():
    def train(optimizer, depth, momentum=None, reporter=None, **others):
        return 0.0

    check_signature(train, COND.keys(), conditional=COND.conditional_names())
    kwargs = build_kwargs(train, {"optimizer": "adam", "depth": 2, "beta": 0.9}, None,
                          plan=call_plan(lambda optimizer, depth, momentum=None, **kw: 0))
    assert kwargs == {"optimizer": "adam", "depth": 2, "beta": 0.9}

    def needs_momentum(optimizer, depth, momentum, **hparams):
        return 0.0

    with pytest.raises(TrainFunctionError) as excinfo:
        check_signature(needs_momentum, COND.keys(), conditional=COND.conditional_names())
    assert "needs a default for conditional hyperparameter 'momentum'" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


# -- options and registry --------------------------------------------------------------

BAD_OPTIONS = [
    ("tpe", dict(num_warmup_trials=-1), "num_warmup_trials must be an integer >= 0"),
    ("tpe", dict(random_fraction=1.5), "random_fraction must be a number"),
    ("tpe", dict(impute_strategy="cl_mean"), "impute_strategy must be one of cl_worst, none"),
    ("tpe", dict(gamma=0), "gamma must be a number with 0 < x <= 1"),
    ("tpe", dict(n_samples=0), "n_samples must be an integer >= 1"),
    ("tpe", dict(num_warmup=3), "did you mean 'num_warmup_trials'"),
    ("gp", dict(impute_strategy="kb"), "impute_strategy must be one of"),
    ("gp", dict(acq_fun="EI"), "has no option 'acq_fun'"),
    ("hyperband", dict(reduction_factor=1), "reduction_factor must be an integer >= 2"),
    ("hyperband", dict(resource_min=9, resource_max=3), "must be below resource_max"),
    ("hyperband", dict(random_fraction=0.5), "has no option 'random_fraction'"),
    ("bohb", dict(random_fraction=-0.1), "random_fraction must be a number"),
    ("bohb", dict(min_points_in_model=0), "min_points_in_model must be an integer >= 1"),
    ("de", dict(population=3), "population must be an integer >= 4"),
    ("de", dict(mutation=0), "mutation must be a number with 0 < F <= 2"),
    ("de", dict(crossover=2), "crossover must be a number with 0 <= x <= 1"),
    ("de", dict(generations=5), "has no option 'generations'"),
]


@pytest.mark.parametrize("name,options,fragment", BAD_OPTIONS)
def test_bad_options_get_one_line_config_errors(name, options, fragment):
    with pytest.raises(ConfigError) as excinfo:
        get_optimizer(name, **options)
    assert fragment in str(excinfo.value) and "\n" not in str(excinfo.value)


@pytest.mark.parametrize("name", NEW_P)
def test_new_optimizers_need_num_trials_and_a_space(name):
    with pytest.raises(ConfigError, match="num_trials"):
        Sim(make(name), XY, num_trials=None)
    with pytest.raises(SearchspaceError, match="non-empty search space"):
        Sim(make(name), Searchspace(), num_trials=3)


def test_registry_names_and_options_are_stable():
    assert {OPTIMIZERS[n] for n in NEW} == {TPE, GP, Hyperband, BOHB, DifferentialEvolution}
    tpe = get_optimizer("tpe", num_warmup_trials=3, random_fraction=0.2, gamma=0.2,
                        n_samples=12, impute_strategy="none")
    assert tpe.config_kwargs == dict(num_warmup_trials=3, random_fraction=0.2,
                                     impute_strategy="none", gamma=0.2, n_samples=12,
                                     multivariate=None)
    gp = get_optimizer("gp", num_warmup_trials=3, random_fraction=0.0,
                       impute_strategy="cl_mean")
    assert gp.config_kwargs["impute_strategy"] == "cl_mean"


# -- end to end ------------------------------------------------------------------------

def budgeted(x, y, budget, reporter, kind="flat", depth=1):
    for step in range(int(budget)):
        reporter.broadcast(-(x - 0.3) ** 2 - y ** 2 + step * 0.01, step)
    return -(x - 0.3) ** 2 - y ** 2 + budget * 0.01


def plain(x, y, reporter, kind="flat", depth=1):
    return -(x - 0.3) ** 2 - y ** 2


def regret(params):
    return (params["x"] - 0.3) ** 2 + params["y"] ** 2


@pytest.mark.parametrize("name,options,fn,num", [
    ("tpe", dict(num_warmup_trials=4), plain, 40),
    ("hyperband", dict(reduction_factor=3, resource_max=9), budgeted, 9),
    ("de", dict(population=4), plain, 24),
])
def test_lagom_runs_the_new_optimizers_on_the_local_backend(name, options, fn, num):
    space = Searchspace(x=("DOUBLE", [0.0, 1.0]), y=("DOUBLE", [-1.0, 1.0]),
                        kind=("CATEGORICAL", ["deep", "flat"]),
                        depth=("INTEGER", [1, 4], {"kind": "deep"}))
    config = HyperparameterOptConfig(num_trials=num, optimizer=name, optimizer_options=options,
                                     searchspace=space, direction="max", es_policy="none",
                                     workers=2, seed=3, name=f"smart-{name}")
    result = experiment.lagom(fn, config)
    assert result.state == "finished" and result.num_finished >= num
    started = [e for e in journal(result.run_dir) if e["type"] == "trial_started"]
    assert len(started) == result.num_finished
    for event in started:
        assert ("depth" in event["params"]) is (event["params"]["kind"] == "deep")
    # what random search draws with the same seed: the bar a model has to clear
    draws = statistics.fmean(regret(sample_config(space, 3, i)) for i in range(num))
    kinds = [e["info"]["sample_type"] for e in started]
    if name == "tpe":
        # warm-up, then the model (and its 10 % random share); the model's samples lie
        # nearer the optimum (0.3, 0) than the random draws
        assert kinds[:4] == ["warmup"] * 4 and "warmup" not in kinds[4:]
        model = [e["params"] for e in started if e["info"]["sample_type"] == "model"]
        assert len(model) >= 0.75 * (num - 4)
        assert statistics.fmean(map(regret, model)) < 0.85 * draws
    if name == "de":
        # generations of 4, each made from the survivors of the one before: the last two
        # lie far nearer the optimum than the random draws
        assert [(e["info"]["generation"], e["info"]["member"]) for e in started] == \
            [(g, m) for g in range(6) for m in range(4)]
        late = [e["params"] for e in started if e["info"]["generation"] >= 4]
        assert statistics.fmean(map(regret, late)) < 0.5 * draws
    if name == "hyperband":
        assert sorted(e["budget"] for e in started) == [1] * 9 + [3] * 3 + [9]

"""Searchspace: Maggy's constructor and ``add``, sampling per type, round trip, errors."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from maggy_magic.errors import MaggyError, SearchspaceError
from maggy_magic.searchspace import Searchspace

N = 2000


def draws(spec, n=N, seed=0):
    sp = Searchspace(x=spec)
    rng = random.Random(seed)
    return [sp.sample(rng)["x"] for _ in range(n)]


def test_maggy_constructor_and_add_build_the_same_space():
    by_kwargs = Searchspace(kernel=("INTEGER", [2, 8]), dropout=("DOUBLE", [0.01, 0.9]))
    by_add = Searchspace()
    assert by_add.add("kernel", ("INTEGER", [2, 8])) is by_add  # chainable
    by_add.add("dropout", ("DOUBLE", [0.01, 0.9]))
    assert by_kwargs == by_add
    assert by_kwargs.names() == {"kernel": "INTEGER", "dropout": "DOUBLE"}
    assert list(by_kwargs.keys()) == ["kernel", "dropout"]
    assert "kernel" in by_kwargs and "lr" not in by_kwargs and len(by_kwargs) == 2
    assert list(by_kwargs) == [
        {"name": "kernel", "type": "INTEGER", "values": [2, 8]},
        {"name": "dropout", "type": "DOUBLE", "values": [0.01, 0.9]},
    ]
    assert Searchspace.DOUBLE == "DOUBLE" and Searchspace.CATEGORICAL == "CATEGORICAL"


def test_type_names_are_case_insensitive():
    assert Searchspace(x=("double", [0, 1])).names() == {"x": "DOUBLE"}


def test_double_samples_are_floats_within_bounds_and_spread():
    values = draws(("DOUBLE", [-1.0, 3.0]))
    assert all(isinstance(v, float) and -1.0 <= v <= 3.0 for v in values)
    assert min(values) < -0.9 and max(values) > 2.9
    assert abs(statistics.median(values) - 1.0) < 0.2


def test_integer_bounds_are_inclusive():
    values = draws(("INTEGER", [2, 4]), n=500)
    assert all(type(v) is int for v in values)
    assert set(values) == {2, 3, 4}


def test_discrete_and_categorical_draw_only_listed_values():
    assert set(draws(("DISCRETE", [1, 2.5, 10]), n=300)) == {1, 2.5, 10}
    assert set(draws(("CATEGORICAL", ["relu", "tanh", None]), n=300)) == {"relu", "tanh", None}


def test_log_double_stays_in_bounds_and_is_log_distributed():
    low, high = 1e-4, 1.0
    values = draws(("DOUBLE", [low, high], "log"))
    assert all(low <= v <= high for v in values)
    geometric_mean = math.sqrt(low * high)  # 1e-2; a linear draw's median would be ~0.5
    assert geometric_mean / 1.5 < statistics.median(values) < geometric_mean * 1.5
    # each decade gets about a quarter of the draws
    share = sum(1 for v in values if v < 1e-3) / len(values)
    assert 0.2 < share < 0.3


class _EdgeRng(random.Random):
    """A generator whose uniform() returns one end of its range exactly."""

    def __init__(self, end: str):
        super().__init__(0)
        self.end = end

    def uniform(self, a, b):
        return a if self.end == "low" else b


@pytest.mark.parametrize("low,high", [(1e-5, 0.1), (0.1, 7.0), (3e-4, 1e-3)])
@pytest.mark.parametrize("end", ["low", "high"])
def test_log_double_never_rounds_past_a_bound(low, high, end):
    value = Searchspace(x=("DOUBLE", [low, high], "log")).sample(_EdgeRng(end))["x"]
    assert low <= value <= high


def test_log_integer_stays_in_bounds_and_is_log_distributed():
    values = draws(("INTEGER", [1, 1000], "log"))
    assert all(type(v) is int and 1 <= v <= 1000 for v in values)
    assert 20 <= statistics.median(values) <= 45  # geometric mean ~31.6; linear: ~500
    assert 1 in values


def test_to_dict_from_dict_round_trip_through_json():
    sp = Searchspace(lr=("DOUBLE", [1e-4, 1e-1], "log"), units=("INTEGER", [8, 512], "log"),
                     act=("CATEGORICAL", ["relu", "tanh"]), bs=("DISCRETE", [16, 32]))
    data = json.loads(json.dumps(sp.to_dict()))
    again = Searchspace.from_dict(data)
    assert again == sp
    assert again.to_dict() == sp.to_dict()
    assert again["lr"].log and again["units"].log and not again["bs"].log
    assert again.get("lr") == ["DOUBLE", [1e-4, 1e-1], "log"]
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert again.sample(rng_a) == sp.sample(rng_b)


def test_grid_enumerates_every_combination_in_order():
    sp = Searchspace(a=("INTEGER", [1, 3]), b=("CATEGORICAL", ["x", "y"]))
    assert sp.grid() == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]


def test_random_parameter_values_are_reproducible():
    sp = Searchspace(a=("DOUBLE", [0, 1]), b=("INTEGER", [0, 100]))
    assert sp.get_random_parameter_values(5, seed=3) == sp.get_random_parameter_values(5, 3)
    assert sp.get_random_parameter_values(5, seed=3) != sp.get_random_parameter_values(5, 4)


def _dup():
    Searchspace(x=("DOUBLE", [0, 1])).add("x", ("DOUBLE", [0, 2]))


MALFORMED = [
    ("unknown type", lambda: Searchspace(x=("DOUBEL", [0, 1])), "did you mean 'DOUBLE'"),
    ("reversed bounds", lambda: Searchspace(x=("DOUBLE", [1.0, 0.0])), "must be below"),
    ("equal int bounds", lambda: Searchspace(x=("INTEGER", [3, 3])), "must be below"),
    ("log low == 0", lambda: Searchspace(x=("DOUBLE", [0.0, 1.0], "log")), "above 0"),
    ("log low < 0", lambda: Searchspace(x=("INTEGER", [-2, 5], "log")), "above 0"),
    ("empty categorical", lambda: Searchspace(x=("CATEGORICAL", [])), "at least one value"),
    ("non-numeric discrete", lambda: Searchspace(x=("DISCRETE", [1, "a"])), "use CATEGORICAL"),
    ("duplicate name", _dup, "defined twice"),
    ("reserved name", lambda: Searchspace(reporter=("DOUBLE", [0, 1])), "reserved"),
    ("non-identifier", lambda: Searchspace().add("learning-rate", ("DOUBLE", [0, 1])),
     "not a Python identifier"),
    ("grid over DOUBLE", lambda: Searchspace(x=("DOUBLE", [0, 1])).grid(),
     "cannot enumerate DOUBLE"),
    ("bad scale", lambda: Searchspace(x=("DOUBLE", [1, 2], "ln")), "scale must be"),
    ("not a tuple", lambda: Searchspace(x="DOUBLE"), "expected (TYPE, values)"),
]


@pytest.mark.parametrize("build,fragment", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_spaces_raise_searchspace_error(build, fragment):
    with pytest.raises(MaggyError) as excinfo:
        build()
    assert type(excinfo.value) is SearchspaceError
    assert isinstance(excinfo.value, ValueError)  # Maggy raised ValueError; keep catching it
    message = str(excinfo.value)
    assert fragment in message
    assert "\n" not in message


# -- conditional parameters ------------------------------------------------------------

def _conditional():
    return Searchspace(momentum=("DOUBLE", [0.0, 0.99], {"optimizer": "sgd"}),
                       optimizer=("CATEGORICAL", ["sgd", "adam", "rmsprop"]),
                       nesterov=("CATEGORICAL", [True, False], {"momentum_kind": "classic"}),
                       momentum_kind=("CATEGORICAL", ["classic", "none"],
                                      {"optimizer": ["sgd", "rmsprop"]}),
                       units=("INTEGER", [8, 64]))


def test_conditional_params_exist_only_when_their_condition_holds():
    sp = _conditional()
    assert [p.name for p in sp.ordered()][:2] == ["optimizer", "momentum"]
    assert sorted(sp.conditional_names()) == ["momentum", "momentum_kind", "nesterov"]
    rng = random.Random(1)
    seen = set()
    for _ in range(300):
        config = sp.sample(rng)
        opt = config["optimizer"]
        assert ("momentum" in config) is (opt == "sgd")
        assert ("momentum_kind" in config) is (opt in ("sgd", "rmsprop"))
        # nested: nesterov needs momentum_kind == classic, which needs an active parent
        assert ("nesterov" in config) is (config.get("momentum_kind") == "classic")
        assert list(config) == [n for n in sp.keys() if n in config]  # space order
        seen.add(tuple(sorted(config)))
    assert len(seen) == 5  # adam; sgd and rmsprop, each with either momentum_kind


def test_unconditional_sampling_stream_is_unchanged_and_branches_share_it():
    plain = Searchspace(a=("DOUBLE", [0, 1]), b=("CATEGORICAL", ["x", "y"]))
    rng = random.Random(3)
    assert plain.sample(random.Random(3)) == {"a": rng.uniform(0, 1), "b": rng.choice(["x", "y"])}
    cond = Searchspace(a=("DOUBLE", [0, 1], {"b": "x"}), b=("CATEGORICAL", ["x", "y"]))
    for seed in range(20):
        full = plain.sample(random.Random(seed))
        assert cond.sample(random.Random(seed)) == cond.prune(full)


def test_add_with_when_matches_the_spec_form_and_rolls_back_on_error():
    by_spec = Searchspace(opt=("CATEGORICAL", ["sgd", "adam"]),
                          lr=("DOUBLE", [1e-4, 1e-1], "log", {"opt": "sgd"}))
    by_add = Searchspace(opt=("CATEGORICAL", ["sgd", "adam"]))
    assert by_add.add("lr", ("DOUBLE", [1e-4, 1e-1], "log"), when={"opt": "sgd"}) is by_add
    assert by_add == by_spec and by_add["lr"].log
    with pytest.raises(SearchspaceError, match="unknown parameter 'opt2'"):
        by_add.add("beta", ("DOUBLE", [0, 1]), when={"opt2": "adam"})
    assert "beta" not in by_add and len(by_add) == 2  # the bad parameter is not kept
    assert list(by_add)[1]["when"] == {"opt": ["sgd"]}


def test_conditional_space_round_trips_through_json():
    sp = _conditional()
    data = json.loads(json.dumps(sp.to_dict()))
    assert data["momentum"] == ["DOUBLE", [0.0, 0.99], {"optimizer": ["sgd"]}]
    again = Searchspace.from_dict(data)
    assert again == sp and again.to_dict() == sp.to_dict()
    assert again.sample(random.Random(5)) == sp.sample(random.Random(5))


def test_conditional_grid_keeps_each_pruned_point_once():
    sp = Searchspace(opt=("CATEGORICAL", ["sgd", "adam"]),
                     m=("DISCRETE", [0.0, 0.9], {"opt": "sgd"}), d=("INTEGER", [1, 2]))
    assert sp.grid() == [{"opt": "sgd", "m": 0.0, "d": 1}, {"opt": "sgd", "m": 0.0, "d": 2},
                         {"opt": "sgd", "m": 0.9, "d": 1}, {"opt": "sgd", "m": 0.9, "d": 2},
                         {"opt": "adam", "d": 1}, {"opt": "adam", "d": 2}]


BAD_CONDITIONS = [
    ("unknown parent", lambda: Searchspace(opt=("CATEGORICAL", ["a"]),
                                           m=("DOUBLE", [0, 1], {"otp": "a"})),
     "condition on unknown parameter 'otp'; did you mean 'opt'"),
    ("parent not discrete", lambda: Searchspace(lr=("DOUBLE", [0, 1]),
                                                m=("DOUBLE", [0, 1], {"lr": 0.5})),
     "condition parent 'lr' is DOUBLE; a condition needs a CATEGORICAL or DISCRETE parent"),
    ("value not in range", lambda: Searchspace(opt=("CATEGORICAL", ["sgd"]),
                                               m=("DOUBLE", [0, 1], {"opt": "sdg"})),
     "condition value 'sdg' is not one of 'opt''s values ['sgd']"),
    ("cycle", lambda: Searchspace(a=("CATEGORICAL", [1, 2], {"b": "x"}),
                                  b=("CATEGORICAL", ["x"], {"a": 1})),
     "conditions form a cycle a -> b -> a"),
    ("self cycle", lambda: Searchspace().add("a", ("DISCRETE", [1]), when={"a": 1}),
     "conditions form a cycle a -> a"),
    ("empty condition", lambda: Searchspace(a=("DOUBLE", [0, 1], {})), "non-empty dict"),
    ("no values", lambda: Searchspace(o=("CATEGORICAL", ["x"]),
                                      a=("DOUBLE", [0, 1], {"o": []})), "lists no value"),
    ("given twice", lambda: Searchspace(o=("CATEGORICAL", ["x"])).add(
        "a", ("DOUBLE", [0, 1], {"o": "x"}), when={"o": "x"}), "give its condition once"),
]


@pytest.mark.parametrize("build,fragment", [m[1:] for m in BAD_CONDITIONS],
                         ids=[m[0] for m in BAD_CONDITIONS])
def test_bad_conditions_raise_one_line_searchspace_errors(build, fragment):
    with pytest.raises(SearchspaceError) as excinfo:
        build()
    assert fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)

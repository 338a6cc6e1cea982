"""The journal writes metric events of the usual shape without the JSON encoder, and
those lines are exactly what the encoder writes: resume and every reader see the same
bytes either way."""

import os

from conftest import hpo_config
from hypothesis import given
from hypothesis import strategies as st

from maggy_magic import experiment
from maggy_magic.store import JOURNAL, journal_line
from maggy_magic.store import encode_event as ENCODE

EDGES = st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 2**64])
FLOATS = st.one_of(EDGES, st.floats())
NUMBERS = st.one_of(FLOATS, st.integers(), st.booleans(), st.none(), st.text(max_size=3))


def metric_event(run, seq, t, trial, step, value):
    return {"type": "metric", "run": run, "seq": seq, "t": t, "trial": trial, "step": step,
            "value": value}


@given(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
       st.text(), st.integers(), st.one_of(FLOATS, st.integers()))
def test_a_usual_metric_line_is_what_the_encoder_writes(run, seq, t, trial, step, value):
    event = metric_event(run, seq, t, trial, step, value)
    assert journal_line(event) == ENCODE(event)


@given(st.one_of(st.text(), st.integers()), st.one_of(st.integers(), FLOATS),
       st.one_of(FLOATS, st.integers()), st.one_of(st.text(), st.integers()),
       st.one_of(st.integers(), FLOATS, st.booleans()), NUMBERS)
def test_any_metric_line_is_what_the_encoder_writes(run, seq, t, trial, step, value):
    event = metric_event(run, seq, t, trial, step, value)
    assert journal_line(event) == ENCODE(event)


def test_the_usual_metric_event_is_written_without_the_encoder():
    def refuse(event):
        raise AssertionError(f"the encoder was asked for {event}")

    for value in (0.25, -0.0, 1e300, 7, -(2**70), float("nan"), float("inf"), -float("inf")):
        event = metric_event("20261203-101010-ab12", 41, 1.7e9 + 0.123, "9f\u00e9\"x", 3, value)
        assert journal_line(event, refuse) == ENCODE(event)
    # any other event, or a metric event of another shape, goes to the encoder
    other = [{"type": "log", "run": "r", "seq": 1, "t": 1.0, "worker": "0", "trial": None,
              "lines": ["a"]},
             dict(metric_event("r", 1, 1.0, "t", 2, 0.5), extra=1),
             metric_event("r", 1, 1.0, "t", True, 0.5),
             metric_event("r", 1, 1.0, "t", 2, True),
             metric_event("r", 1, float("nan"), "t", 2, 0.5)]
    for event in other:
        assert journal_line(event, lambda e: "encoded") == "encoded"


def test_a_runs_journal_holds_each_broadcast_point_as_the_listener_saw_it(tmp_path):
    def train(x, reporter):
        for step in range(40):
            reporter.broadcast(x * step if step % 7 else float(step), step)
        return x

    seen = []
    config = hpo_config(num_trials=4, root=str(tmp_path), workers=2)
    result = experiment.lagom(train, config, listeners=[seen.append])
    with open(os.path.join(result.run_dir, JOURNAL), encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if '"type":"metric"' in line]
    expected = [ENCODE(e) for e in seen if e["type"] == "metric"]
    assert len(expected) == 160
    assert lines == expected

"""Values that cannot cross the wire are the caller's error, named at the call; they never
break the connection they were meant for."""

import socket

import numpy as np
import pytest

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment, rpc
from maggy_magic.errors import UnsendableValueError


def test_an_unencodable_message_names_its_value_and_keeps_the_sequence():
    secret = rpc.new_secret()
    listener = socket.create_server(("127.0.0.1", 0))
    client = rpc.Client("127.0.0.1", listener.getsockname()[1], secret)
    server_sock, _ = listener.accept()
    server = rpc.ServerConnection(server_sock, secret, set())
    try:
        client.hello({"type": "register", "worker": "w"})
        with pytest.raises(UnsendableValueError, match=r"note\['info'\]\['step'\] is a "
                           r"numpy\.int64"):
            client.send({"type": "note", "info": {"step": np.int64(3)}})
        with pytest.raises(UnsendableValueError, match="nan"):
            client.send({"type": "note", "info": {"loss": float("nan")}})
        client.send({"type": "note", "info": {"step": 3}})
        server_sock.settimeout(5)
        messages = []
        for _ in range(20):  # bounded: both frames arrive within a few reads
            server_sock.setblocking(True)
            messages += server.read()
            if len(messages) == 2:
                break
        assert [m["type"] for m in messages] == ["register", "note"]
        assert messages[1]["info"] == {"step": 3}  # in sequence: the failed sends used no number
    finally:
        client.close()
        server.close()
        listener.close()


def test_a_trial_that_notes_a_numpy_value_fails_with_that_error_not_a_lost_worker():
    def train(x, trial_context=None):  # the worker injects it when the function names it
        trial_context.note({"best_epoch": np.int64(2)})
        return x

    config = HyperparameterOptConfig(num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                     es_policy="none", workers=1, name="wire")
    # the run fails as the trial did: with the error itself, the trial's record attached
    with pytest.raises(UnsendableValueError, match=r"best_epoch'\] is a numpy\.int64") as info:
        experiment.lagom(train, config)
    trials = info.value.result.trials.to_dict("records")
    assert trials[0]["state"] == "FAILED"
    assert "lost" not in str(info.value)

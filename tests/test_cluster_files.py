"""Trial files and dist checkpoints on a cluster of separate hosts (``tests/netcluster.py``):
each host has its own mount namespace with a private ``/tmp``, so the driver's run
directory (under this machine's ``/tmp``) does not exist on any executor. TensorBoard logs
and trial files must come home over the wire, a gang restarted after a host died must
resume from the chief's checkpoint on whatever host its new chief lands, and a
``checkpoint_dir`` under ``/tmp`` is refused before training.
"""

import os
import threading
import time

import pytest
from conftest import journal

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment, tensorboard
from maggy_magic.errors import CheckpointDirError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(netcluster):
    spark = netcluster.session()
    yield spark
    spark.stop()
    netcluster.ensure_hosts(2)


def logs_scalars(x, reporter):
    """TensorBoard scalars into ``tensorboard.logdir()`` (TensorBoard's own event writer)
    and a file saying where it ran into ``reporter.trial_dir()``."""
    import os
    import socket
    import time

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from maggy_magic import tensorboard

    folder = tensorboard.logdir()
    writer = EventFileWriter(os.path.join(folder, "train"))
    for step in range(3):
        value = summary_pb2.Summary.Value(tag="loss", simple_value=x / (step + 1))
        writer.add_event(event_pb2.Event(step=step, wall_time=time.time(),
                                         summary=summary_pb2.Summary(value=[value])))
    writer.close()
    with open(os.path.join(reporter.trial_dir(), "where.txt"), "w") as handle:
        handle.write(socket.gethostname())
    time.sleep(1.0)  # both hosts get trials
    return {"metric": x, "folder": folder}


def test_hpo_trials_tensorboard_logs_reach_the_drivers_run_dir(session, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_tensorboard import hparams_view

    config = HyperparameterOptConfig(
        num_trials=4, searchspace=Searchspace(x=("DOUBLE", [0.5, 1.0])), es_policy="none",
        workers=2, seed=3, hb_interval=0.2, name="tb", root=str(tmp_path), backend="spark",
        backend_options={"spark": session})
    result = experiment.lagom(logs_scalars, config)
    assert result.num_finished == 4
    hosts = set()
    for record in result.trial_records:
        trial = record["trial"]
        # the trial wrote elsewhere: the run directory does not exist on the hosts
        assert not str(record["metrics"]["folder"]).startswith(str(tmp_path))
        where = os.path.join(result.run_dir, "trials", trial, "files", "where.txt")
        hosts.add(open(where).read())
        events = EventAccumulator(os.path.join(tensorboard.trial_logdir(result.run_dir, trial),
                                               "train"))
        events.Reload()
        x = record["params"]["x"]
        assert [e.step for e in events.Scalars("loss")] == [0, 1, 2]
        assert [e.value for e in events.Scalars("loss")] == pytest.approx(
            [x, x / 2, x / 3], rel=1e-6)
    assert hosts == {"host1", "host2"}
    # the run's HParams summary, read back as TensorBoard's HParams tab does
    _found, groups = hparams_view(tensorboard.run_logdir(result.run_dir))
    assert set(groups) == {r["trial"] for r in result.trial_records}


def resumes(module, train_set, lr, reporter, dist_context):
    """40 steps; the chief checkpoints every 5; the first attempt slows down after step
    10 (the test kills a host then). Returns the step it started at."""
    import socket
    import time

    import torch

    from maggy_magic.distributed import torch as dist_torch

    start = 0
    state = dist_torch.load_checkpoint()
    if state is not None:
        module.load_state_dict(state["model"])
        start = state["step"] + 1
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    batches = list(torch.utils.data.DataLoader(train_set, batch_size=8))
    print(f"rank {dist_context.rank} attempt {dist_context.attempt} on "
          f"{socket.gethostname()} starts at step {start}")
    loss = None
    for step in range(start, 40):
        x, y = batches[step % len(batches)]
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reporter.broadcast(float(step), step)
        if step % 5 == 4:
            dist_torch.save_checkpoint({"model": module.state_dict(), "step": step})
        if dist_context.attempt == 0 and step >= 10:
            time.sleep(0.5)
    return {"metric": -loss.item(), "start": start, "attempt": dist_context.attempt,
            "host": socket.gethostname()}


def torch_config(session, tmp_path, **kwargs):
    import torch

    from maggy_magic import TorchDistributedConfig

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    data = torch.utils.data.TensorDataset(x, x @ torch.tensor([2.0, -1.0, 0.5]))
    return TorchDistributedConfig(
        module=torch.nn.Linear(3, 1), dataset=[data], hparams={"lr": 0.05}, workers=2,
        backend="spark", backend_options={"spark": session}, hb_interval=0.2,
        root=str(tmp_path), **kwargs)


def test_a_gang_whose_chiefs_host_dies_resumes_from_its_checkpoint_on_other_hosts(
        session, netcluster, tmp_path):
    hosts, killed = {}, {}

    def kill_the_chiefs_host(event):
        if event["type"] == "worker_joined":
            hosts[event["worker"]] = event["host"]
        elif event["type"] == "trial_started" and event["info"].get("rank") == 0:
            hosts["chief"] = hosts.get(event["worker"])
        elif event["type"] == "metric" and event["trial"] == "0000" and event["step"] >= 10 \
                and not killed:
            killed["host"] = hosts["chief"]

            def kill():
                killed["pids"] = netcluster.kill_host(killed["host"])
                netcluster.ensure_hosts(2)

            threading.Thread(target=kill, daemon=True).start()

    started = time.monotonic()
    result = experiment.lagom(resumes, torch_config(session, tmp_path, max_restarts=1),
                              listeners=[kill_the_chiefs_host])
    assert killed.get("pids"), "the chief never reached step 10: no host was killed"
    assert result.state == "finished" and result.attempts == 2, result
    # the restarted chief ran on a host that never had the checkpoint (the other one, or
    # the killed one back in a fresh namespace under its name), and went on from it
    assert result.metrics["attempt"] == 1
    assert int(result.metrics["start"]) >= 10  # > 0: from the last checkpoint before the kill
    checkpoints = os.listdir(os.path.join(result.run_dir, "checkpoints"))
    assert any("-a0-" in name for name in checkpoints), checkpoints
    attempt1 = [e for e in journal(result.run_dir) if e["type"] == "trial_started"
                and e["info"]["attempt"] == 1]
    last = int(result.metrics["start"]) // 5 - 1  # the chief's checkpoints were numbered
    assert {e["info"]["resume_from"] for e in attempt1} == {
        os.path.join(result.run_dir, "checkpoints", f"checkpoint-a0-{last:05d}.pt")}
    assert time.monotonic() - started < 280


def test_a_checkpoint_dir_under_each_hosts_own_tmp_is_refused(session, tmp_path):
    where = "/tmp/maggy-checkpoints-of-this-test"
    with pytest.raises(CheckpointDirError) as info:
        experiment.lagom(resumes, torch_config(session, tmp_path, max_restarts=1,
                                               checkpoint_dir=where))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"checkpoint_dir {where} is not one")
    assert "storage=" in message and "unset" in message
    assert info.value.result.attempts == 1
    assert not any(e["type"] == "metric" for e in journal(info.value.result.run_dir))

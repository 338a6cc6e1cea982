"""Data-parallel training (``dist``) with PyTorch: gangs, rendezvous, DDP, faults."""

import json
import os
import time

import pytest
import torch  # the test extra installs torch: without it these tests fail, never skip
from conftest import journal

from maggy_magic import DistributedError, TorchDistributedConfig, experiment
from maggy_magic.errors import ConfigError, TrainFunctionError

N_ITEMS, BATCH, STEPS = 64, 8, 4  # per-rank batch 8 on 2 ranks == one process with 16


def make_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_ITEMS, 3, generator=generator)
    y = x @ torch.tensor([2.0, -1.0, 0.5]) + 0.3
    return torch.utils.data.TensorDataset(x, y, torch.arange(N_ITEMS))


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.layer(x).squeeze(-1)


def train(module, train_set, lr, batch_size, out, reporter):
    """An ordinary training function: it would run unchanged as a hyperparameter trial."""
    from maggy_magic.distributed.context import current

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size)
    losses, seen, step = [], [], 0
    for epoch in range(3):
        for x, y, index in loader:
            loss = torch.nn.functional.mse_loss(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if epoch == 0:
                seen.extend(index.tolist())
            reporter.broadcast(-loss.item(), step)
            step += 1
    ctx = current()
    weight = [p.detach().tolist() for p in module.parameters()]
    with open(os.path.join(out, f"rank{ctx.rank}.json"), "w") as handle:
        json.dump({"rank": ctx.rank, "seen": seen, "weight": weight, "losses": losses,
                   "env": {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                      "MASTER_ADDR", "MASTER_PORT")}},
                  handle)
    print(f"rank {ctx.rank} done")
    return {"metric": -losses[-1], "first_loss": losses[0], "rank": ctx.rank}


def single_process_weights(lr, batch, epochs):
    """What one process with the global batch reaches after ``epochs`` epochs."""
    data = make_data()
    model = Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    for _ in range(epochs):
        for x, y, _ in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [p.detach().tolist() for p in model.parameters()]


def flat(weights):
    return torch.tensor([v for w in weights for v in torch.tensor(w).flatten().tolist()])


def config(tmp_path, **kwargs):
    out = str(tmp_path)
    kwargs.setdefault("hparams", {"lr": 0.1, "batch_size": BATCH, "out": out})
    return TorchDistributedConfig(module=Linear, dataset=[make_data()], workers=2,
                                  **kwargs)


@pytest.mark.slow
def test_two_ranks_converge_like_one_process_with_the_global_batch(tmp_path):
    result = experiment.lagom(train, config(tmp_path))
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    # each rank saw a disjoint shard; together, the whole set
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(N_ITEMS))
    # DDP kept the ranks identical, and equal to one process with batch 2b: per-rank
    # shards interleave (rank r gets items r, r+2, ...), so step k of both ranks covers
    # the same 2b items as step k of the single process. 3 epochs of 4 steps = 12 steps.
    assert ranks[0]["weight"] == ranks[1]["weight"]
    expected = single_process_weights(0.1, 2 * BATCH, 3)
    # 12 steps; the tolerance covers float summation order only
    assert torch.allclose(flat(ranks[0]["weight"]), flat(expected), atol=1e-5)
    assert not torch.allclose(flat(ranks[0]["weight"]),
                              flat(single_process_weights(0.1, BATCH, 3)), atol=1e-3)
    # training converged
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0] / 10
    # the chief's returned dict is the result; ranks come from the plan, not the workers
    assert result.state == "finished" and result.metrics["rank"] == 0
    assert result.best_metric == pytest.approx(-ranks[0]["losses"][-1])
    assert result["best_val"] == result.best_metric and result.attempts == 1
    assert list(result.ranks["rank"]) == [0, 1]
    for rank, info in enumerate(ranks):
        assert info["env"]["RANK"] == str(rank) and info["env"]["WORLD_SIZE"] == "2"
        assert info["env"]["LOCAL_RANK"] == str(rank)  # both on this host
    assert ranks[0]["env"]["MASTER_PORT"] == ranks[1]["env"]["MASTER_PORT"]
    events = journal(result.run_dir)
    started = [e for e in events if e["type"] == "trial_started"]
    assert [(e["trial"], e["info"]["rank"]) for e in started] == [("0000", 0), ("0001", 1)]
    # every rank's logs and per-step metrics reach the event stream
    logs = " ".join(line for e in events if e["type"] == "log" for line in e["lines"])
    assert "rank 0 done" in logs and "rank 1 done" in logs
    metric_trials = {e["trial"] for e in events if e["type"] == "metric"}
    assert metric_trials == {"0000", "0001"}


def train_with_checkpoints(module, train_set, lr, batch_size, out, reporter):
    """Saves a checkpoint each epoch; rank 1 dies in epoch 1 of the first attempt."""
    from maggy_magic.distributed import torch as dist_torch
    from maggy_magic.distributed.context import current

    ctx = current()
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    start = 0
    state = dist_torch.load_checkpoint()
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    loader = dist_torch.loader(train_set, batch_size=batch_size)
    step = start * len(loader)
    for epoch in range(start, 3):
        loader.epoch = epoch
        for x, y, _ in loader:
            if ctx.rank == 1 and ctx.attempt == 0 and epoch == 1:
                os._exit(3)  # the worker process dies mid-training
            loss = torch.nn.functional.mse_loss(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reporter.broadcast(-loss.item(), step)
            step += 1
        dist_torch.save_checkpoint({"model": module.state_dict(),
                                    "optimizer": optimizer.state_dict(), "epoch": epoch})
    return {"metric": -loss.item(), "start_epoch": start, "attempt": ctx.attempt}


@pytest.mark.slow
def test_a_dead_rank_restarts_the_gang_from_the_chiefs_checkpoint(tmp_path):
    result = experiment.lagom(train_with_checkpoints, config(tmp_path, max_restarts=2))
    assert result.state == "finished" and result.attempts == 2
    assert result.metrics["attempt"] == 1 and result.metrics["start_epoch"] == 1
    ranks = result.ranks
    assert list(ranks[ranks.attempt == 0].state) == ["FAILED", "FAILED"]
    assert list(ranks[ranks.attempt == 1].state) == ["FINISHED", "FINISHED"]
    failed = ranks[ranks.attempt == 0].set_index("rank").error
    # rank 0's gloo error comes from rank 1's death: the failure names rank 1
    assert "rank 1 failed: its worker" in failed[1] and "aborted" in failed[0]
    checkpoints = os.listdir(os.path.join(result.run_dir, "checkpoints"))
    assert any("-a0-" in c for c in checkpoints) and any("-a1-" in c for c in checkpoints)


@pytest.mark.slow
def test_a_dead_rank_without_restarts_fails_fast_with_a_clear_error(tmp_path):
    started = time.monotonic()
    with pytest.raises(DistributedError) as info:
        experiment.lagom(train_with_checkpoints, config(tmp_path))
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "\n" not in message
    assert "distributed training failed on attempt 0: rank" in message
    assert "rank 1 failed: its worker" in message
    assert "max_restarts=0" in message
    assert elapsed < 90  # bound, not a timing claim: a hang would hit the test timeout
    assert info.value.result.state == "failed"


def train_chief_raises(module, train_set, lr, batch_size, out, reporter):
    """Rank 0 raises after one step; rank 1 blocks in the next all-reduce."""
    from maggy_magic.distributed.context import current

    ctx = current()
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    for step, (x, y, _) in enumerate(torch.utils.data.DataLoader(train_set, batch_size=4)):
        if ctx.rank == 0 and step == 1:
            with open(os.path.join(out, "pid1"), "w"):
                pass
            raise ValueError("chief diverged")
        loss = torch.nn.functional.mse_loss(module(x), y)
        optimizer.zero_grad()
        loss.backward()  # all-reduce: rank 1 waits here for rank 0 forever
        optimizer.step()
    return 0.0


@pytest.mark.slow
def test_ranks_blocked_in_a_collective_are_aborted_when_a_peer_fails(tmp_path):
    started = time.monotonic()
    with pytest.raises(DistributedError) as info:
        experiment.lagom(train_chief_raises, config(tmp_path, abort_timeout=5.0))
    assert "rank 0 failed: ValueError: chief diverged" in str(info.value) or \
        "rank 0 failed: chief diverged" in str(info.value)
    assert time.monotonic() - started < 90
    events = journal(info.value.result.run_dir)
    failed = {e["trial"]: e["error"] for e in events if e["type"] == "trial_failed"}
    assert failed["0001"] == "aborted because rank 0 failed"


def train_rank1_never_meets(module, train_set, lr, batch_size, out, reporter):
    """Rank 0 waits at a rendezvous that rank 1 never reaches."""
    from maggy_magic.distributed.context import current

    ctx = current()
    if ctx.rank == 0:
        ctx.rendezvous("ready", key="after-setup")
    else:
        time.sleep(120)
    return 0.0


@pytest.mark.slow
def test_a_rendezvous_that_a_rank_never_reaches_fails_the_gang_in_its_name(tmp_path):
    started = time.monotonic()
    with pytest.raises(DistributedError) as info:
        experiment.lagom(train_rank1_never_meets,
                         config(tmp_path, rendezvous_timeout=3.0, abort_timeout=3.0))
    message = str(info.value)
    assert "\n" not in message
    assert "rank 1 failed: did not reach rendezvous 'after-setup' within 3 s " \
           "(rendezvous_timeout)" in message, message
    assert time.monotonic() - started < 90  # a bound: without the timeout it takes 120 s+
    events = journal(info.value.result.run_dir)
    failed = {e["trial"]: e["error"] for e in events if e["type"] == "trial_failed"}
    assert failed["0001"].startswith("rank 1 failed: did not reach rendezvous")
    assert failed["0000"] == "aborted because rank 1 failed"  # it was waiting, not failing


def plain(module, train_set, reporter):
    return 0.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"workers": 1}, "workers >= 2"),
    ({"module": None}, "needs module="),
    ({"dataset": None}, "needs dataset="),
    ({"module": "Linear"}, "must be a torch.nn.Module instance or class"),
    ({"dataset": [object()]}, "map-style dataset"),
    ({"hparams": {"f": object()}}, "JSON values"),
    ({"mixed_precision": True}, "mixed_precision is not supported"),
    ({"max_restarts": -1}, "max_restarts must be an integer >= 0"),
])
def test_bad_dist_configs_get_one_line_errors(kwargs, fragment):
    options = dict(module=Linear, dataset=[make_data()], hparams={}, workers=2)
    options.update(kwargs)
    with pytest.raises(ConfigError) as info:
        experiment.lagom(plain, TorchDistributedConfig(**options))
    assert fragment in str(info.value) and "\n" not in str(info.value)


class Wide(torch.nn.Module):
    def __init__(self, hidden=4):
        super().__init__()
        self.layer = torch.nn.Linear(3, hidden)


def reports_the_width(module, train_set, lr, reporter):  # `hidden` only builds the module
    from maggy_magic.distributed.context import current

    layer = module.module.layer  # the rank's Wide, inside DistributedDataParallel
    return {"metric": 0.0, "rank": current().rank, "lr": lr,
            "out_features": layer.out_features, "weight_rows": layer.weight.shape[0]}


@pytest.mark.slow
def test_hparams_that_build_the_module_need_not_be_training_arguments():
    result = experiment.lagom(reports_the_width, TorchDistributedConfig(
        Wide, [make_data()], {"hidden": 8, "lr": 0.1}, workers=2))
    assert result.state == "finished"
    # every rank built its module with hidden=8 (the class default is 4), and got lr
    ended = {e["trial"]: e["metrics"] for e in journal(result.run_dir)
             if e["type"] == "trial_finished"}
    assert sorted(m["rank"] for m in ended.values()) == [0, 1]
    for metrics in ended.values():
        assert (metrics["out_features"], metrics["weight_rows"], metrics["lr"]) == (8, 8, 0.1)
    # a hyperparameter that neither the module nor the function takes is still refused
    config = TorchDistributedConfig(Wide, [make_data()], {"hidden": 8, "lr": 0.1, "mom": 1})
    with pytest.raises(TrainFunctionError, match="does not take hyperparameter\\(s\\) mom"):
        config.trial_function(reports_the_width, config.make_optimizer())


def test_unknown_framework_and_unknown_arguments_are_one_line_errors():
    from maggy_magic.distributed.config import DistributedConfig

    config = DistributedConfig(Linear, [make_data()], {}, name="x", hb_interval=1,
                               description="")
    config.framework = "jax"
    with pytest.raises(ConfigError, match="unknown framework 'jax'"):
        experiment.lagom(plain, config)

    def needs_more(module, train_set, weird):
        return 0.0

    with pytest.raises(TrainFunctionError, match="needs argument 'weird'"):
        experiment.lagom(needs_more, TorchDistributedConfig(Linear, [make_data()], {}))


CELL = '''
import torch
torch.manual_seed(0)
_x = torch.randn(32, 2)
dataset = [torch.utils.data.TensorDataset(_x, _x.sum(1))]
module = torch.nn.Linear(2, 1)
hparams = {"lr": 0.05}

def train(module, train_set, lr, reporter):
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for step, (x, y) in enumerate(torch.utils.data.DataLoader(train_set, batch_size=4)):
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        opt.zero_grad(); loss.backward(); opt.step()
        reporter.broadcast(-loss.item(), step)
    return {"metric": -loss.item(), "items": len(train_set)}
'''


@pytest.mark.slow
def test_the_dist_magic_runs_the_cell_on_two_ranks(shell, tmp_path):
    shell.run_cell_magic("maggy", f"dist --workers 2 --framework torch --ui text "
                                  f"--root {tmp_path} -o res", CELL)
    result = shell.user_ns["res"]
    assert result.state == "finished" and result.metrics["items"] == 16  # half of 32
    assert list(result.ranks["rank"]) == [0, 1]


@pytest.mark.parametrize("line, fragment", [
    ("dist --framework jax", "jax"),
    ("dist --workers 1", "workers >= 2"),
    ("dist --dataset nowhere", "--dataset 'nowhere' is not defined"),
    ("hpo --framework torch", "does not apply to %%maggy hpo"),
])
def test_bad_dist_magic_lines_get_one_line_errors(shell, line, fragment):
    with pytest.raises(ConfigError) as info:
        shell.run_cell_magic("maggy", line, CELL)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_torch_dist_on_spark_in_barrier_mode(tmp_path):
    options = {"master": "local-cluster[2,1,1024]", "barrier": True}
    result = experiment.lagom(train, config(tmp_path, backend="spark",
                                            backend_options=options))
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["weight"] == ranks[1]["weight"]
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(N_ITEMS))
    assert result.state == "finished" and result.metrics["rank"] == 0
    # the session has 2 task slots: 3 ranks cannot run together
    with pytest.raises(ConfigError, match="can run 2 worker"):
        experiment.lagom(train, TorchDistributedConfig(
            module=Linear, dataset=[make_data()], hparams={"lr": 0.1, "batch_size": 8,
                                                          "out": str(tmp_path)},
            workers=3, backend="spark", backend_options=options))

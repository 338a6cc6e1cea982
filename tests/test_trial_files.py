"""Trial files and checkpoints of workers that do not share the driver's disk.

Workers are real local worker processes, each started in a private mount namespace with
an empty tmpfs over the runs folder (``unshare -m``, as root): the run directory the
driver names does not exist for them, exactly as on an executor of a cluster. Their trial
folders, relayed checkpoints and restarts must reach the driver's run directory over the
wire. Training functions live at module level (the workers import this module).
"""

import base64
import hashlib
import json
import os
import sys

import pytest
from conftest import hpo_config, journal

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment, tensorboard
from maggy_magic.driver.artifacts import RunFiles
from maggy_magic.errors import CheckpointDirError, ConfigError
from maggy_magic.trial_files import TOKEN_FILE, TrialFiles, shares_disk

MIB = 1024 * 1024


def private_workers(monkeypatch, tmp_path, hidden):
    """Local workers start in a mount namespace of their own where ``hidden`` is empty."""
    wrapper = tmp_path / "private-python"
    wrapper.write_text(
        "#!/bin/sh\nexec unshare -m --propagation private sh -c "
        "'mount -t tmpfs tmpfs \"$0\" && exec \"$@\"' "
        f"{hidden} {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))


def blob(trial_id, size):
    """``size`` bytes that depend on the trial (so a mixed-up file is caught)."""
    seed = hashlib.sha256(str(trial_id).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


# -- training functions (module level: workers import them) ----------------------------
def writes_files(n, reporter):
    logdir = tensorboard.logdir()
    with open(os.path.join(logdir, "events.out.tfevents.0.fake"), "wb") as handle:
        handle.write(b"event " + str(n).encode())
    with open(os.path.join(logdir, "big.bin"), "wb") as handle:  # several chunks
        handle.write(blob(reporter.trial_id, 2 * MIB + 12345))
    open(os.path.join(logdir, "empty"), "wb").close()
    os.makedirs(os.path.join(logdir, "sub", "deep"))
    with open(os.path.join(logdir, "sub", "deep", "a.txt"), "w") as handle:
        handle.write(f"deep {n}")
    os.symlink("/etc/hostname", os.path.join(logdir, "link"))
    with open(os.path.join(reporter.trial_dir(), "model.txt"), "w") as handle:
        handle.write(f"model {n}")
    reporter.broadcast(float(n), 0)
    if n == 3:
        raise ValueError("trial three fails after writing its files")
    return {"metric": float(n), "logdir": logdir,
            "seen_run_dir": int(os.path.isdir(reporter.run_dir))}


def writes_too_much(x, reporter):
    folder = reporter.trial_dir()
    for name, size in (("a-small", 10 * 1024), ("b-900k", 900 * 1024), ("c-600k", 600 * 1024)):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"x" * size)
    return x


def writes_here(x, reporter):
    with open(os.path.join(reporter.trial_dir(), "here"), "w") as handle:
        handle.write("here")
    return {"metric": x, "dir": reporter.trial_dir(), "logdir": tensorboard.logdir()}


# -- over the wire -----------------------------------------------------------------------
def test_trial_folders_travel_home_from_workers_that_do_not_share_the_disk(
        tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    config = HyperparameterOptConfig(
        num_trials=3, optimizer="gridsearch",
        searchspace=Searchspace(n=("DISCRETE", [1, 2, 3])), es_policy="none", workers=2,
        max_failures=1, name="files", root=str(runs))
    in_place = {}

    def at_the_end(event):  # listeners run on the driver's thread, as the end is recorded
        if event["type"] in ("trial_finished", "trial_failed"):
            run_dir = os.path.join(str(runs), "files", event["run"])
            in_place[event["trial"]] = all(os.path.exists(os.path.join(run_dir, *path)) for
                                           path in (("tensorboard", event["trial"], "big.bin"),
                                                    ("trials", event["trial"], "files",
                                                     "model.txt")))

    result = experiment.lagom(writes_files, config, listeners=[at_the_end])
    assert result.num_finished == 2 and result.num_failed == 1
    assert len(in_place) == 3 and all(in_place.values()), in_place
    trials = {t["trial"]: t for t in result.trial_records}
    assert len(trials) == 3
    for trial_id, record in trials.items():
        n = int(record["params"]["n"])
        folder = os.path.join(result.run_dir, "tensorboard", trial_id)
        if n != 3:  # the function ran where the run directory does not exist
            metrics = record["metrics"]
            assert float(metrics["seen_run_dir"]) == 0
            assert not metrics["logdir"].startswith(str(runs)), metrics["logdir"]
        with open(os.path.join(folder, "big.bin"), "rb") as handle:
            assert handle.read() == blob(trial_id, 2 * MIB + 12345)
        assert open(os.path.join(folder, "events.out.tfevents.0.fake"), "rb").read() == \
            b"event " + str(n).encode()
        assert os.path.getsize(os.path.join(folder, "empty")) == 0
        assert open(os.path.join(folder, "sub", "deep", "a.txt")).read() == f"deep {n}"
        assert not os.path.lexists(os.path.join(folder, "link"))  # never followed or sent
        model = os.path.join(result.run_dir, "trials", trial_id, "files", "model.txt")
        assert open(model).read() == f"model {n}"
    events = journal(result.run_dir)
    # each trial's files were in place before its end was recorded: the journal's order
    ended = [e["trial"] for e in events if e["type"] in ("trial_finished", "trial_failed")]
    assert sorted(ended) == sorted(trials)
    lines = [line for e in events if e["type"] == "log" for line in e["lines"]]
    assert any("not sent (symbolic links" in line and "link" in line for line in lines)
    assert not os.path.exists(os.path.join(result.run_dir, ".incoming"))


def test_files_over_the_limit_stay_behind_and_the_run_says_which(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    result = experiment.lagom(writes_too_much, hpo_config(num_trials=1, files_limit_mb=1,
                                                          name="limit", root=str(runs)))
    assert result.state == "finished" and result.num_finished == 1
    trial_id = result.trial_records[0]["trial"]
    folder = os.path.join(result.run_dir, "trials", trial_id, "files")
    assert sorted(os.listdir(folder)) == ["a-small", "b-900k"]
    assert os.path.getsize(os.path.join(folder, "b-900k")) == 900 * 1024
    lines = [line for e in journal(result.run_dir) if e["type"] == "log"
             and e["trial"] == trial_id for line in e["lines"]]
    left = [line for line in lines if "stayed on worker" in line]
    assert len(left) == 1 and "c-600k" in left[0] and "files_limit_mb" in left[0]


def test_a_worker_that_shares_the_disk_writes_into_the_run_directory(tmp_path):
    result = experiment.lagom(writes_here, hpo_config(num_trials=1, name="shared",
                                                      root=str(tmp_path / "runs")))
    trial = result.trial_records[0]["trial"]
    folder = os.path.join(result.run_dir, "trials", trial, "files")
    assert os.listdir(folder) == ["here"]
    metrics = result.trial_records[0]["metrics"]
    assert metrics["dir"] == folder  # written in place, not staged and sent
    assert metrics["logdir"] == tensorboard.trial_logdir(result.run_dir, trial)
    token = open(os.path.join(result.run_dir, TOKEN_FILE)).read()
    assert shares_disk(result.run_dir, token) and not shares_disk(result.run_dir, "0" * 32)
    assert not shares_disk(str(tmp_path / "elsewhere"), token)


# -- the driver's checks -----------------------------------------------------------------
class _Worker:
    id = "w1"


class _Trial:
    def __init__(self, trial_id, worker="w1", rank=None):
        self.trial_id, self.worker, self.params = trial_id, worker, {"x": trial_id}
        self.info_dict = {} if rank is None else {"rank": rank}


class _Events:
    def __init__(self):
        self.emitted = []

    def emit(self, kind, **fields):
        self.emitted.append(dict(fields, type=kind))


def _chunk(path, data=b"x", batch="b1", trial="t1", offset=0, last=True):
    return {"type": "artifact", "trial": trial, "batch": batch, "path": path,
            "offset": offset, "data": base64.b64encode(data).decode(), "last": last}


def _done(batch="b1", trial="t1", **extra):
    return dict({"type": "artifacts_done", "trial": trial, "batch": batch, "left": [],
                 "skipped": []}, **extra)


@pytest.mark.parametrize("path", ["/etc/evil", "tensorboard/t1/../../evil",
                                  "tensorboard/t2/x", "trials/t1/log.txt", "journal.jsonl",
                                  "tensorboard/t1/./x", "tensorboard/t1//x",
                                  "checkpoints/x", "tensorboard\\t1\\x"])
def test_the_driver_refuses_paths_outside_the_trials_folders(tmp_path, path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = _Events()
    files = RunFiles(str(run_dir), events)
    trial = _Trial("t1")  # not a chief: no checkpoints
    files.handle(_Worker(), trial, _chunk(path), lambda *a: None)
    files.handle(_Worker(), trial, _done(), lambda *a: None)
    assert sorted(os.listdir(run_dir)) == [TOKEN_FILE]
    assert not os.path.exists(tmp_path / "evil")
    assert any("refused" in line for e in events.emitted for line in e["lines"])


def test_the_driver_follows_no_symbolic_link_and_takes_no_other_workers_trial(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "tensorboard").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, run_dir / "tensorboard" / "t1")
    files = RunFiles(str(run_dir), _Events())
    files.handle(_Worker(), _Trial("t1"), _chunk("tensorboard/t1/x"), lambda *a: None)
    files.handle(_Worker(), _Trial("t1"), _done(), lambda *a: None)
    assert os.listdir(outside) == []
    files.handle(_Worker(), _Trial("t2", worker="w2"), _chunk("tensorboard/t2/x", trial="t2"),
                 lambda *a: None)
    files.handle(_Worker(), _Trial("t2", worker="w2"), _done(trial="t2"), lambda *a: None)
    assert not os.path.exists(run_dir / "tensorboard" / "t2")


def test_chunks_out_of_order_or_over_the_limit_refuse_the_batch(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    files = RunFiles(str(run_dir), _Events(), limit=10)
    trial = _Trial("t1")
    files.handle(_Worker(), trial, _chunk("tensorboard/t1/a", b"12345", last=False), None)
    files.handle(_Worker(), trial, _chunk("tensorboard/t1/a", b"678", offset=6), None)
    files.handle(_Worker(), trial, _done(), None)
    assert not os.path.exists(run_dir / "tensorboard" / "t1" / "a")
    files.handle(_Worker(), trial, _chunk("tensorboard/t1/b", b"x" * 11, batch="b2"), None)
    files.handle(_Worker(), trial, _done(batch="b2"), None)
    assert not os.path.exists(run_dir / "tensorboard" / "t1" / "b")
    files.handle(_Worker(), trial, _chunk("tensorboard/t1/c", b"x" * 10, batch="b3"), None)
    files.handle(_Worker(), trial, _done(batch="b3"), None)
    assert (run_dir / "tensorboard" / "t1" / "c").read_bytes() == b"x" * 10


def test_fetch_serves_checkpoints_only(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "backup").mkdir(parents=True)
    (run_dir / "checkpoints" / "backup" / "ckpt").write_bytes(b"state" * 1000)
    (run_dir / "journal.jsonl").write_text("{}")
    files = RunFiles(str(run_dir), _Events())
    answers = []
    trial = _Trial("t1")
    for msg in ({"type": "fetch", "trial": "t1", "path": "checkpoints/backup"},
                {"type": "fetch", "trial": "t1", "path": "checkpoints/backup/ckpt",
                 "offset": 4000},
                {"type": "fetch", "trial": "t1", "path": "journal.jsonl"},
                {"type": "fetch", "trial": "t1", "path": "checkpoints/../journal.jsonl"}):
        files.handle(_Worker(), trial, msg, lambda worker, answer: answers.append(answer))
    assert answers[0]["files"] == [["checkpoints/backup/ckpt", 5000]]
    assert base64.b64decode(answers[1]["data"]) == (b"state" * 1000)[4000:]
    assert answers[1]["eof"] is True
    assert "error" in answers[2] and "error" in answers[3]


def test_a_relayed_checkpoint_over_the_limit_is_a_clear_error(tmp_path):
    from maggy_magic.errors import FilesLimitError

    sent = []
    files = TrialFiles(sent.append)
    files.welcome({"run_dir": str(tmp_path / "absent"), "run_token": "t", "files_limit": 100})
    assert not files.shared
    local = files.local_path(str(tmp_path / "absent" / "checkpoints"))
    assert local.startswith(files.root) and not local.startswith(str(tmp_path))
    os.makedirs(local)
    with open(os.path.join(local, "c.pt"), "wb") as handle:
        handle.write(b"x" * 101)
    with pytest.raises(FilesLimitError, match=r"checkpoint .*c\.pt is 0\.0 MiB, over the "):
        files.relay("t1", os.path.join(local, "c.pt"))
    assert sent == []
    files.cleanup()


def test_storage_needs_a_scheme_fsspec_knows(tmp_path):
    with pytest.raises(ConfigError, match="storage must be a URI"):
        hpo_config(storage="/no/scheme").validate()
    with pytest.raises(ConfigError, match=r"fsspec cannot open nosuchscheme://"):
        hpo_config(storage="nosuchscheme://x").validate()
    with pytest.raises(ConfigError, match="files_limit_mb must be a positive number"):
        hpo_config(files_limit_mb=0).validate()
    hpo_config(storage=f"file://{tmp_path}").validate()


# -- storage -----------------------------------------------------------------------------
def test_with_storage_trial_folders_go_there_and_come_into_the_run_dir(tmp_path, monkeypatch):
    runs, shared = tmp_path / "runs", tmp_path / "shared"
    runs.mkdir()
    shared.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    result = experiment.lagom(writes_too_much, hpo_config(
        num_trials=1, files_limit_mb=1, name="stored", root=str(runs),
        storage=f"file://{shared}"))
    trial_id = result.trial_records[0]["trial"]
    stored = shared / "stored" / result.run_id / "trials" / trial_id / "files"
    assert sorted(os.listdir(stored)) == ["a-small", "b-900k", "c-600k"]  # no wire limit
    folder = os.path.join(result.run_dir, "trials", trial_id, "files")
    assert sorted(os.listdir(folder)) == ["a-small", "b-900k", "c-600k"]
    lines = [line for e in journal(result.run_dir) if e["type"] == "log" for line in e["lines"]]
    assert not any("stayed on worker" in line for line in lines)


# -- dist ---------------------------------------------------------------------------------
def test_a_restarted_gang_on_private_disks_resumes_from_the_relayed_checkpoint(
        tmp_path, monkeypatch):
    from test_dist import config, train_with_checkpoints

    runs = tmp_path / "runs"
    runs.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    result = experiment.lagom(train_with_checkpoints,
                              config(tmp_path, max_restarts=1, root=str(runs)))
    assert result.state == "finished" and result.attempts == 2
    assert result.metrics["attempt"] == 1 and result.metrics["start_epoch"] == 1
    checkpoints = os.listdir(os.path.join(result.run_dir, "checkpoints"))
    assert any("-a0-" in c for c in checkpoints) and any("-a1-" in c for c in checkpoints)
    ranks = result.ranks
    resumed = ranks[(ranks.attempt == 1) & (ranks["rank"] == 0)]
    recorded = ranks[(ranks.attempt == 0) & (ranks["rank"] == 0)]
    assert len(resumed) == 1 and len(recorded) == 1
    started = [e for e in journal(result.run_dir) if e["type"] == "trial_started"
               and e["info"]["attempt"] == 1]
    # the restart resumes from the copy in the driver's run directory
    assert {e["info"]["resume_from"] for e in started} == {
        os.path.join(result.run_dir, "checkpoints", "checkpoint-a0-00000.pt")}


def test_a_checkpoint_dir_the_ranks_do_not_share_is_refused_in_one_line(
        tmp_path, monkeypatch):
    from test_dist import config, train_with_checkpoints

    runs = tmp_path / "runs"
    runs.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    where = str(runs / "ckpt")
    with pytest.raises(CheckpointDirError) as info:
        experiment.lagom(train_with_checkpoints,
                         config(tmp_path, max_restarts=1, root=str(runs), checkpoint_dir=where))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"checkpoint_dir {where} is not one")
    assert "storage=" in message and "leave checkpoint_dir unset" in message
    assert info.value.result.attempts == 1  # refused, not restarted
    events = journal(info.value.result.run_dir)
    assert not any(e["type"] == "metric" for e in events)  # before any training step
    json.dumps(events)

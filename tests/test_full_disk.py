"""A full disk fails the run loudly, with a one-line error naming the file and the disk,
and leaves a journal that resumes once space is back.

The run directory is a small tmpfs mounted in a private mount namespace (``unshare -m``),
so nothing outside this test sees it; the experiment runs in its own Python process.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import os, sys
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
    from maggy_magic.errors import RunStoreError
    from maggy_magic.store import load_trials

    disk = sys.argv[1]
    filler = os.path.join(disk, "filler")
    with open(filler, "wb") as handle:  # leave about 1 MB free: room for two trials
        handle.write(b"\\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 1_000_000))

    def train(x):
        for i in range(2000):  # 200 kB of output per trial (twice that on disk: log, journal)
            print(f"line {i:05d} " + "x" * 88)
        return x

    def config(resume=None):
        return HyperparameterOptConfig(
            num_trials=6, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
            workers=1, name="disk", seed=3, root=os.path.join(disk, "runs"), resume=resume)

    try:
        experiment.lagom(train, config())
        print("FIRST finished")
    except RunStoreError as exc:
        print("FIRST", type(exc).__name__, exc)
        print("STATE", exc.result.state, exc.result.num_finished)
        run_id = exc.result.run_id
    trials, _, _ = load_trials(os.path.join(disk, "runs", "disk", run_id))
    print("KEPT", sum(t.done for t in trials.values()))
    os.unlink(filler)
    result = experiment.lagom(train, config(resume=run_id))
    print("SECOND", result.state, result.num_finished)
""")


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_one_line_and_the_journal_resumes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "exp.py").write_text(SCRIPT)
    mounted = f"mount -t tmpfs -o size=4m tmpfs {disk} && exec {sys.executable} exp.py {disk}"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mounted],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    out = done.stdout
    first = next(line for line in out.splitlines() if line.startswith("FIRST"))
    assert first.startswith("FIRST RunStoreError cannot write the run's record"), out + done.stderr
    assert "No space left on device" in first and "MB free on that disk" in first
    assert str(disk) in first  # names the file, so the disk
    state = next(line for line in out.splitlines() if line.startswith("STATE")).split()
    assert state[1] == "failed" and int(state[2]) < 6  # it stopped there, not at the end
    kept = int(next(line for line in out.splitlines() if line.startswith("KEPT")).split()[1])
    assert kept >= 1  # what was written before the disk filled stays readable
    assert "SECOND finished 6" in out, out + done.stderr
    assert not os.listdir(disk)  # the tmpfs lived only in the test's namespace

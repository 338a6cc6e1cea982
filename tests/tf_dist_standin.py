"""A stand-in gang for the TensorFlow runner's tests: N spawned processes whose context
exchanges rendezvous values through files."""

import json
import multiprocessing
import os
import time


class FileContext:
    """rank, world_size, checkpoint_dir and a file-based ``rendezvous``."""

    def __init__(self, rank, world_size, exchange_dir, checkpoint_dir=None):
        self.rank, self.world_size = rank, world_size
        self.is_chief = rank == 0
        self.exchange_dir, self.checkpoint_dir = exchange_dir, checkpoint_dir
        self._round = 0

    def rendezvous(self, value):
        self._round += 1
        path = os.path.join(self.exchange_dir, f"r{self._round}_{self.rank}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump(value, handle)
        os.replace(path + ".tmp", path)
        deadline = time.monotonic() + 120
        paths = [os.path.join(self.exchange_dir, f"r{self._round}_{r}.json")
                 for r in range(self.world_size)]
        while not all(os.path.exists(p) for p in paths):
            if time.monotonic() > deadline:
                raise TimeoutError("rendezvous")
            time.sleep(0.05)
        values = []
        for p in paths:
            with open(p) as handle:
                values.append(json.load(handle))
        return values


def _rank_main(rank, world_size, work_dir, fn_name, kwargs, options, checkpoint_dir):
    import tf_dist_fns

    from maggy_magic.dist import tf as dist_tf

    context = FileContext(rank, world_size, work_dir, checkpoint_dir)
    fn = getattr(tf_dist_fns, fn_name)
    def named(v):
        if isinstance(v, list):
            return [named(item) for item in v]
        return getattr(tf_dist_fns, v) if isinstance(v, str) else v

    options = {k: named(v) for k, v in options.items()}
    try:
        result = {"value": dist_tf.run(fn, kwargs, context, **options)}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result = {"error": type(exc).__name__, "message": str(exc)}
    with open(os.path.join(work_dir, f"result_{rank}.json"), "w") as handle:
        json.dump(result, handle)


def run_gang(world_size, work_dir, fn_name, kwargs, options=None, checkpoint_dir=None):
    """Every rank's ``{"value"|"error", ...}``; ``options`` name tf_dist_fns attributes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, world_size, str(work_dir), fn_name,
                                                  kwargs, options or {}, checkpoint_dir))
             for r in range(world_size)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    results = []
    for r in range(world_size):
        with open(os.path.join(work_dir, f"result_{r}.json")) as handle:
            results.append(json.load(handle))
    return results


def _single_main(work_dir, fn_name, kwargs):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.pop("TF_CONFIG", None)
    import tf_dist_fns

    result = getattr(tf_dist_fns, fn_name)(**kwargs)
    with open(os.path.join(work_dir, "single.json"), "w") as handle:
        json.dump(result, handle)


def run_single(work_dir, fn_name, kwargs):
    """``fn_name(**kwargs)`` in one fresh process without any strategy."""
    proc = multiprocessing.get_context("spawn").Process(
        target=_single_main, args=(str(work_dir), fn_name, kwargs))
    proc.start()
    proc.join(300)
    with open(os.path.join(work_dir, "single.json")) as handle:
        return json.load(handle)

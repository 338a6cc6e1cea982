"""A gang of N spawned processes for the TensorFlow session's tests, each with a real
``DistContext`` whose rendezvous goes through files instead of the driver."""

import json
import multiprocessing
import os
import time


def file_exchange(exchange_dir, rank, world_size):
    """A rendezvous through files in ``exchange_dir`` (``DistContext``'s ``exchange``)."""
    rounds = {}

    def exchange(key, value, timeout=None):
        rounds[key] = rounds.get(key, 0) + 1
        stem = os.path.join(exchange_dir, f"{key}-{rounds[key]}")
        with open(f"{stem}_{rank}.tmp", "w") as handle:
            json.dump(value, handle)
        os.replace(f"{stem}_{rank}.tmp", f"{stem}_{rank}.json")
        paths = [f"{stem}_{r}.json" for r in range(world_size)]
        deadline = time.monotonic() + (timeout or 120)
        while not all(os.path.exists(p) for p in paths):
            if time.monotonic() > deadline:
                raise TimeoutError(key)
            time.sleep(0.05)
        values = []
        for p in paths:
            with open(p) as handle:
                values.append(json.load(handle))
        return values

    return exchange


def _rank_main(rank, world_size, work_dir, fn_name, kwargs, options, checkpoint_dir):
    import tf_dist_fns

    from maggy_magic.dist import tf as dist_tf
    from maggy_magic.dist.context import DistContext
    from maggy_magic.worker import build_kwargs

    context = DistContext(rank=rank, world_size=world_size, attempt=0, gang="g",
                          host="127.0.0.1", checkpoint_dir=checkpoint_dir, resume_from=None,
                          exchange=file_exchange(work_dir, rank, world_size),
                          note=lambda info: None)
    fn = getattr(tf_dist_fns, fn_name)
    def named(v):
        if isinstance(v, list):
            return [named(item) for item in v]
        return getattr(tf_dist_fns, v) if isinstance(v, str) else v

    options = {k: named(v) for k, v in options.items()}
    hparams = options.pop("hparams", {})
    try:
        with dist_tf.session(context, options.get("model"), options.get("dataset"),
                             hparams) as injected:
            call = build_kwargs(fn, hparams, None,
                                extras=dict(injected, dist_context=context, **kwargs))
            result = {"value": fn(**call)}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result = {"error": type(exc).__name__, "message": str(exc)}
    with open(os.path.join(work_dir, f"result_{rank}.json"), "w") as handle:
        json.dump(result, handle)


def run_gang(world_size, work_dir, fn_name, kwargs, options=None, checkpoint_dir=None):
    """Every rank's ``{"value"|"error", ...}`` of ``fn_name(**kwargs + injected)``;
    ``options`` (model, dataset, hparams) name tf_dist_fns attributes."""
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

"""What one trial (or one rank) asks for: GPUs and CPUs, and how a worker gets them.

``gpus_per_trial`` is a whole number of devices per worker (1, 2, ...) or a fraction that
divides one device evenly (0.5, 0.25, ...: ``1 / gpus_per_trial`` workers share each
device); ``cpus_per_trial`` a whole number of cores per worker. :class:`Resources` holds
both, checked (:func:`gpus_option`, :func:`cpus_option`: one-line
:class:`~maggy_magic.errors.ConfigError`\\ s that say what to change).

Where the devices are and which worker gets which is the backend's business (the local
backend: :func:`visible_devices` and :func:`assign`; Spark: its own GPU scheduling). What
every worker does with its devices is the same: :func:`worker_env` is the environment it
runs under, set before anything imports a framework: ``CUDA_VISIBLE_DEVICES`` (exactly
its devices, so frameworks number them from 0), ``MAGGY_MAGIC_DEVICES`` (the same list:
the devices were given by maggy-magic), ``TF_FORCE_GPU_ALLOW_GROWTH=true`` (so that
trials sharing a device do not each reserve all of its memory; unless the user set it)
and, with ``cpus_per_trial``, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` (unless set). Without a GPU request nothing touches
``CUDA_VISIBLE_DEVICES``.

Stdlib only (it runs inside Spark tasks too); no GPU library is imported: the driver's
view of the devices is ``nvidia-smi -L``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .errors import ConfigError

#: The variable that tells CUDA (and every framework on it) which devices a process sees.
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
#: Set with it when maggy-magic chose the devices (the distributed runtimes read it).
ASSIGNED_ENV = "MAGGY_MAGIC_DEVICES"
#: TensorFlow allocates memory as needed instead of all of each visible device.
TF_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
#: Thread pools sized by ``cpus_per_trial``.
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: A line of ``nvidia-smi -L``: ``GPU 0: NVIDIA H100 (UUID: GPU-...)``.
_SMI_LINE = re.compile(r"^\s*GPU\s+(\d+)\s*:")


def gpus_option(value: Any) -> Optional[float]:
    """``gpus_per_trial``: None (or 0: no request), a whole number of devices, or a
    fraction ``1/n`` of one; returns it as an int when whole, else a float."""
    if value is None:
        return None
    flag = "gpus_per_trial (--gpus-per-trial)"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise ConfigError(f"{flag} must be a number of GPUs per trial (e.g. 1, 2 or 0.5), "
                          f"got {value!r}")
    if value < 0:
        raise ConfigError(f"{flag} must be >= 0 GPUs per trial, got {value!r}")
    if value == 0:
        return None
    if value >= 1:
        if float(value).is_integer():
            return int(value)
        raise ConfigError(f"{flag} above 1 must be a whole number of GPUs, got {value!r}; "
                          f"use {math.floor(value)} or {math.ceil(value)}")
    share = 1 / value
    if abs(share - round(share)) > 1e-6:
        near = 1 / max(2, round(share))
        raise ConfigError(f"{flag} below 1 must divide one GPU evenly (0.5, 0.25, 0.2, ... "
                          f"= 1/n trials per GPU), got {value!r}; use {near:g}")
    return 1 / round(share)


def cpus_option(value: Any) -> Optional[int]:
    """``cpus_per_trial``: None (no request) or a whole number of cores >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not float(value).is_integer() or value < 1:
        raise ConfigError(f"cpus_per_trial (--cpus-per-trial) must be a whole number of "
                          f"CPU cores >= 1, got {value!r}")
    return int(value)


class Resources:
    """A checked request per trial: ``gpus`` (None, a whole number or ``1/n``) and ``cpus``
    (None or a whole number). False when nothing is asked for."""

    def __init__(self, gpus: Any = None, cpus: Any = None):
        self.gpus, self.cpus = gpus_option(gpus), cpus_option(cpus)

    @classmethod
    def of(cls, config: Any) -> "Resources":
        return cls(getattr(config, "gpus_per_trial", None),
                   getattr(config, "cpus_per_trial", None))

    def __bool__(self) -> bool:
        return self.gpus is not None or self.cpus is not None

    @property
    def per_device(self) -> int:
        """Workers that share one device (1 unless ``gpus`` is a fraction)."""
        return round(1 / self.gpus) if self.gpus and self.gpus < 1 else 1

    @property
    def devices_per_worker(self) -> int:
        """Devices each worker sees (1 when it shares one)."""
        return int(self.gpus) if self.gpus and self.gpus >= 1 else 1

    def capacity(self, devices: int) -> int:
        """How many workers ``devices`` devices hold at this request."""
        return devices * self.per_device // self.devices_per_worker

    def describe(self) -> str:
        parts = []
        if self.gpus is not None:
            parts.append(f"gpus_per_trial={self.gpus:g}")
        if self.cpus is not None:
            parts.append(f"cpus_per_trial={self.cpus}")
        return ", ".join(parts)


def visible_devices(environ: Optional[Mapping[str, str]] = None,
                    which: Callable[[str], Optional[str]] = shutil.which) -> List[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when it is set (empty,
    or an entry CUDA reads as invalid such as ``-1``, hides what follows, as in CUDA),
    else the driver's view (the indices ``nvidia-smi -L`` lists), else none."""
    environ = os.environ if environ is None else environ
    raw = environ.get(DEVICES_ENV)
    if raw is not None:
        devices = []
        for entry in raw.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("-"):
                break
            devices.append(entry)
        return devices
    smi = which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20,
                                check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listed.returncode != 0:
        return []
    return [m.group(1) for m in map(_SMI_LINE.match, listed.stdout.splitlines()) if m]


def assign(devices: Sequence[str], workers: int, request: Resources) -> List[List[str]]:
    """Worker ``i``'s devices, for ``workers`` workers: disjoint sets of
    ``request.devices_per_worker`` devices, or, for a fraction, each device shared by
    ``request.per_device`` consecutive workers. More workers than the devices hold is a
    one-line :class:`ConfigError`."""
    capacity = request.capacity(len(devices))
    if workers > capacity:
        raise ConfigError(too_many(workers, capacity, len(devices), request))
    if request.per_device > 1:
        return [[devices[i // request.per_device]] for i in range(workers)]
    size = request.devices_per_worker
    return [list(devices[i * size:(i + 1) * size]) for i in range(workers)]


def too_many(workers: int, capacity: int, devices: int, request: Resources,
             where: str = "this machine") -> str:
    """One line: ``workers`` workers at ``request`` do not fit on ``devices`` devices."""
    if devices == 0:
        return (f"gpus_per_trial={request.gpus:g} asks for GPUs but {where} has none "
                f"visible ({DEVICES_ENV} and nvidia-smi found no device); drop "
                "gpus_per_trial (--gpus-per-trial) or run where GPUs are")
    if capacity == 0:
        return (f"gpus_per_trial={request.gpus:g} asks for {request.devices_per_worker} GPUs "
                f"per trial but {where} has {devices}; set gpus_per_trial <= {devices}")
    return (f"{workers} worker(s) at gpus_per_trial={request.gpus:g} need more GPUs than "
            f"the {devices} on {where} (room for {capacity} worker(s)); set workers <= "
            f"{capacity} or lower gpus_per_trial")


def worker_env(devices: Optional[Sequence[str]], cpus: Optional[int] = None,
               environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The variables a worker with ``devices`` (None: no GPU request) and ``cpus`` runs
    under; ``environ`` (default: this process's) says which ones the user set already."""
    environ = os.environ if environ is None else environ
    env: Dict[str, str] = {}
    if devices is not None:
        env[DEVICES_ENV] = env[ASSIGNED_ENV] = ",".join(devices)
        if TF_GROWTH_ENV not in environ:
            env[TF_GROWTH_ENV] = "true"
    if cpus:
        env.update({name: str(cpus) for name in THREAD_ENVS if name not in environ})
    return env


def apply_env(devices: Optional[Sequence[str]], cpus: Optional[int] = None) -> None:
    """Set :func:`worker_env` in this process (a Spark task, before the function loads)."""
    os.environ.update(worker_env(devices, cpus))

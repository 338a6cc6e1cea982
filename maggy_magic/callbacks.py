"""Maggy's Keras callbacks: report a ``logs`` entry of ``model.fit`` to the driver.

``KerasBatchEnd(reporter, metric="loss")`` broadcasts ``logs[metric]`` after every training
batch (the steps count batches over the whole fit); ``KerasEpochEnd(reporter,
metric="val_loss")`` broadcasts it after every epoch, at step = the epoch. A metric the
logs do not have fails the trial with one line naming the ones they do have (Maggy
broadcast 0 instead).

The classes subclass the ``Callback`` of the Keras that trains: ``tf.keras`` when
TensorFlow is installed (Keras 3, or tf-keras under ``TF_USE_LEGACY_KERAS=1``), else
standalone ``keras``. They are made when first used, so importing this module imports no
framework::

    from maggy_magic.callbacks import KerasEpochEnd
    model.fit(x, y, validation_data=(vx, vy), callbacks=[KerasEpochEnd(reporter)])
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .errors import BroadcastError

#: The callbacks this module makes on first use.
NAMES = ("KerasBatchEnd", "KerasEpochEnd")

#: ``(name, Keras Callback base) -> class``: one class per Keras that asked.
_made: Dict[Tuple[str, Any], type] = {}


def keras_callback_base() -> type:
    """``Callback`` of the Keras that trains (see the module docstring)."""
    try:
        import tensorflow as tf
    except ImportError:
        import keras

        return keras.callbacks.Callback
    return tf.keras.callbacks.Callback


def logged(logs: Optional[Dict[str, Any]], metric: str, where: str) -> float:
    """``logs[metric]`` as a float; a missing one is a :class:`BroadcastError`."""
    logs = logs or {}
    if metric not in logs:
        have = ", ".join(sorted(logs)) or "nothing"
        raise BroadcastError(f"{where}: the Keras logs have no {metric!r} (they have {have}); "
                             "pass metric= one of those (val_* ones need validation_data)")
    return float(logs[metric])


def _make(name: str) -> type:
    base = keras_callback_base()
    if (name, base) in _made:
        return _made[(name, base)]
    batch_end = name == "KerasBatchEnd"

    def __init__(self: Any, reporter: Any, metric: str = "loss" if batch_end
                 else "val_loss") -> None:
        base.__init__(self)
        self.reporter, self.metric_name = reporter, metric

    def on_train_batch_end(self: Any, batch: int, logs: Optional[dict] = None) -> None:
        self.reporter.broadcast(logged(logs, self.metric_name, name))

    def on_epoch_end(self: Any, epoch: int, logs: Optional[dict] = None) -> None:
        self.reporter.broadcast(logged(logs, self.metric_name, name), epoch)

    body = {"on_train_batch_end": on_train_batch_end} if batch_end else \
        {"on_epoch_end": on_epoch_end}
    made = type(name, (base,), {"__init__": __init__, "__module__": __name__,
                                "__doc__": f"Maggy's {name} (see {__name__})", **body})
    _made[(name, base)] = made
    return made


def __getattr__(name: str) -> Any:
    if name in NAMES:
        return _make(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Training functions and data of the TensorFlow dist tests.

Each example's first column is its id; the model records the ids it trains on (a
py_function in its first layer) and the functions write them to ``ids_<rank>.json``, so a
test can tell which rank saw which examples.
"""

import json
import os

N_EXAMPLES, N_FEATURES, N_CLASSES = 256, 4, 3
#: Ids of the examples the models of this process trained or evaluated on.
SEEN = []


def data():
    """A linearly separable problem: ids in column 0, 4 features, 3 classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.normal(size=(N_EXAMPLES, N_FEATURES)).astype("float32")
    labels = np.argmax(features @ rng.normal(size=(N_FEATURES, N_CLASSES)), axis=1)
    ids = np.arange(N_EXAMPLES, dtype="float32")[:, None]
    return np.concatenate([ids, features], axis=1), labels.astype("int64")


def build(lr=0.5):
    """A softmax regression over the features (the id column is recorded, then dropped),
    compiled with plain SGD; same initial weights on every call."""
    import tensorflow as tf

    def record(ids):
        SEEN.extend(int(i) for i in ids.numpy())
        return ids

    def drop_ids(x):
        ids = tf.py_function(record, [x[:, 0]], tf.float32)
        with tf.control_dependencies([ids]):
            return tf.identity(x[:, 1:])

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(N_FEATURES + 1,)),
        tf.keras.layers.Lambda(drop_ids),
        tf.keras.layers.Dense(N_CLASSES, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    return model


def rank():
    """This process's rank, read from ``TF_CONFIG`` (0 without one)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return config.get("task", {}).get("index", 0)


def _write_seen(out_dir):
    with open(os.path.join(out_dir, f"ids_{rank()}.json"), "w") as handle:
        json.dump(SEEN, handle)


def train_fit(lr, epochs, out_dir, dist_context=None):
    """A laptop training function: loads arrays, builds, ``model.fit(x, y)``; saves a
    checkpoint per epoch when it runs distributed."""
    import tensorflow as tf

    x, y = data()
    model = build(lr)
    callbacks = []
    if dist_context is not None:
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(
            os.path.join(dist_context.checkpoint_dir, "ckpt-{epoch}"), save_weights_only=True))
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=callbacks)
    _write_seen(out_dir)
    losses = history.history["loss"]
    return {"loss": losses[-1], "first_loss": losses[0], "rank": rank(),
            "replicas": model.distribute_strategy.num_replicas_in_sync,
            "losses": json.dumps(losses)}


def train_maggy_style(model, train_set, test_set, hparams):
    """Maggy's signature: the model and the datasets come from the config."""
    history = model.fit(train_set.batch(hparams["batch"]), epochs=hparams["epochs"],
                        shuffle=False, verbose=0)
    loss = model.evaluate(test_set.batch(hparams["batch"]), verbose=0)
    _write_seen(hparams["out_dir"])
    return {"loss": loss, "first_loss": history.history["loss"][0],
            "replicas": model.distribute_strategy.num_replicas_in_sync}


def train_keras3():
    """A Keras 3 model (``import keras``): its fit cannot run under the strategy."""
    import keras

    model = keras.Sequential([keras.Input(shape=(N_FEATURES + 1,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return {"loss": 0.0}


def train_dies_once(lr, epochs, dist_context):
    """Backs up every epoch; rank 1 of the first attempt dies after epoch 2."""
    import tensorflow as tf

    from maggy_magic.distributed.tf import backup_and_restore

    class DieAfterTwo(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if dist_context.attempt == 0 and dist_context.rank == 1 and epoch == 1:
                os._exit(3)

    x, y = data()
    model = build(lr)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[backup_and_restore(), DieAfterTwo()])
    return {"loss": history.history["loss"][-1], "epochs_run": len(history.history["loss"]),
            "attempt": dist_context.attempt}


def read_npz(paths):
    """Maggy's ``process_data``: reads the files ``paths`` names on this rank and returns
    ``[train, test]`` as arrays; records which rank read them next to the files."""
    import numpy as np

    sets = []
    for path in paths:
        with np.load(path) as arrays:
            sets.append((arrays["x"], arrays["y"]))
        with open(f"{path}.read-by-{rank()}", "w") as handle:
            handle.write(str(os.getpid()))
    return sets

"""The model and data of the example notebooks: a small Keras classifier of the 8×8 digit
images that ship with scikit-learn, and the one training function every notebook uses.

``train`` is written once, for a laptop: it takes its hyperparameters by name and a
``reporter`` that may be None. maggy-magic calls the very same function in its trials.
The ablation notebook builds on the same pieces: ``build_deep_model`` (layers to leave
out), ``load_frame`` and ``data_without`` (features and image regions to leave out) and
``fit``. TensorFlow is imported inside the functions, so importing this module stays cheap.
"""

#: Names of the 64 pixel features, row by row: ``pixel_<row>_<column>``.
PIXELS = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
#: Image regions, as groups of pixels, that an ablation study can leave out by name.
REGIONS = {
    "top": [p for p in PIXELS if int(p.split("_")[1]) < 2],
    "bottom": [p for p in PIXELS if int(p.split("_")[1]) >= 6],
    "left": [p for p in PIXELS if int(p.split("_")[2]) < 2],
    "right": [p for p in PIXELS if int(p.split("_")[2]) >= 6],
    "center": [p for p in PIXELS if all(2 <= int(i) < 6 for i in p.split("_")[1:])],
}


def load_data(seed=0, test_size=0.25, drop_features=()):
    """Train/validation arrays of scikit-learn's digits (1797 images), scaled to [0, 1].

    ``drop_features`` zeroes those pixel columns (``"pixel_3_4"``), for ablation studies.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    names = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    for name in drop_features:
        x[:, names.index(name)] = 0.0
    y = digits.target.astype("int64")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return (x_train, y_train), (x_val, y_val)


def load_frame():
    """The 1797 digits as a pandas DataFrame: the 64 pixel columns (``PIXELS``, scaled to
    [0, 1]) and ``label``."""
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    frame = pd.DataFrame(digits.data / 16.0, columns=PIXELS).astype("float32")
    frame["label"] = digits.target.astype("int64")
    return frame


def data_without(ablated_features=(), frame=None, seed=0, test_size=0.25):
    """Train/validation arrays of ``frame`` (default: ``load_frame()``) with the left-out
    features blanked: pixel names or ``REGIONS`` names, whose pixels are set to 0 for
    every image. The model's input keeps its 64 columns, so the same architecture trains
    on every variant (a constant input carries no information)."""
    from sklearn.model_selection import train_test_split

    frame = load_frame() if frame is None else frame.copy()
    for feature in ablated_features:
        frame[REGIONS.get(feature, [feature])] = 0.0
    x = frame[PIXELS].to_numpy("float32")
    y = frame["label"].to_numpy("int64")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return (x_train, y_train), (x_val, y_val)


def build_deep_model(hidden=(32, 32), dropout=0.2, lr=3e-3):
    """A perceptron with hidden layers ``hidden_1``, ``hidden_2``..., then ``dropout`` and
    ``output``: 64 pixels → 10 classes, compiled with Adam."""
    import keras

    layers = [keras.Input(shape=(64,), name="pixels")]
    layers += [keras.layers.Dense(int(units), activation="relu", name=f"hidden_{i + 1}")
               for i, units in enumerate(hidden)]
    layers += [keras.layers.Dropout(float(dropout), name="dropout"),
               keras.layers.Dense(10, activation="softmax", name="output")]
    model = keras.Sequential(layers, name="digits")
    model.compile(optimizer=keras.optimizers.Adam(float(lr)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(model, data, epochs, reporter=None):
    """Train ``model`` on ``data`` (from ``load_data``) for ``epochs`` epochs; report the
    validation accuracy after each one; return the final accuracy and loss."""
    (x_train, y_train), (x_val, y_val) = data
    accuracy, loss = 0.0, float("nan")
    for epoch in range(int(epochs)):
        model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
        loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
        if reporter is not None:
            reporter.broadcast(accuracy, step=epoch)
        print(f"epoch {epoch}: val_accuracy={accuracy:.4f} val_loss={loss:.4f}")
    return {"accuracy": float(accuracy), "loss": float(loss)}


def build_model(hidden=64, dropout=0.2, lr=1e-3):
    """A two-layer perceptron for 64 pixels → 10 classes, compiled with Adam.

    It uses ``tf.keras``: Keras 3 on a laptop and in trials, tf-keras (Keras 2) in
    TensorFlow dist workers, where ``model.fit`` trains under the distribution strategy.
    """
    from tensorflow import keras

    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(int(hidden), activation="relu", name="hidden"),
        keras.layers.Dropout(float(dropout), name="dropout"),
        keras.layers.Dense(10, activation="softmax", name="output"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(float(lr)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(hidden, dropout, lr, epochs=8, reporter=None):
    """Train for ``epochs`` epochs; report validation accuracy after each one."""
    from tensorflow import keras

    keras.utils.set_random_seed(0)
    return fit(build_model(hidden, dropout, lr), load_data(), epochs, reporter)

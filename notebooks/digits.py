"""The model and data of the example notebooks: a small Keras classifier of the 8×8 digit
images that ship with scikit-learn, and the one training function every notebook uses.

``train`` is written once, for a laptop: it takes its hyperparameters by name and a
``reporter`` that may be None. maggy-magic calls the very same function in its trials.
TensorFlow is imported inside the functions, so importing this module stays cheap.
"""


def load_data(seed=0, test_size=0.25, drop_features=()):
    """Train/validation arrays of scikit-learn's digits (1797 images), scaled to [0, 1].

    ``drop_features`` zeroes those pixel columns (``"pixel_3_4"``), for ablation studies.
    """
    import numpy as np
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


def build_model(hidden=64, dropout=0.2, lr=1e-3):
    """A two-layer perceptron for 64 pixels → 10 classes, compiled with Adam."""
    import keras

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
    import keras

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_val, y_val) = load_data()
    model = build_model(hidden, dropout, lr)
    accuracy = 0.0
    for epoch in range(int(epochs)):
        model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
        loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
        if reporter is not None:
            reporter.broadcast(accuracy, step=epoch)
        print(f"epoch {epoch}: val_accuracy={accuracy:.4f} val_loss={loss:.4f}")
    return {"accuracy": float(accuracy), "loss": float(loss)}

"""Small datasets shipped inside the package (no download at run time).

``digits.npz``: the UCI ML "Optical Recognition of Handwritten Digits" data set (E. Alpaydin and C. Kaynak,
1998; https://archive.ics.uci.edu/dataset/80), the 1797 8x8 images of its test part (pixel counts 0..16, as
scikit-learn ships them), licensed CC BY 4.0. fastdl splits it once, stratified with a fixed seed, into 1438
training and 359 test images.
"""

import importlib.resources

import numpy as np


def load_digits(dtype="float32", scale=True):
    """((x_train, y_train), (x_test, y_test)): x of shape (n, 64), pixels divided by 16 when ``scale``;
    y the digit (int64)."""
    with importlib.resources.files(__name__).joinpath("digits.npz").open("rb") as file, np.load(file) as archive:
        arrays = {name: archive[name] for name in archive.files}

    def images(name):
        values = arrays[name].astype(dtype)
        return values / 16 if scale else values

    return ((images("train_images"), arrays["train_labels"].astype(np.int64)),
            (images("test_images"), arrays["test_labels"].astype(np.int64)))

"""Export a trained fastdl model to ONNX and run it with onnxruntime (needs onnx and onnxruntime)."""
import numpy as np
import onnxruntime

import fastdl
from fastdl import losses

(x_train, y_train), (x_test, y_test) = fastdl.datasets.load_digits()
model = fastdl.Sequential(fastdl.Dense(64, 64, activation="tanh", seed=0), fastdl.BatchNorm(64),
                          fastdl.Dense(64, 10, seed=1))
fastdl.fit(model, losses.softmax_cross_entropy, fastdl.optim.Adam(model.parameters(), lr=3e-3), (x_train, y_train),
           epochs=5, progress=False, seed=0)
model.eval()

path = fastdl.interop.to_onnx(model, "digits.onnx")  # Gemm, Tanh, BatchNormalization; any batch size
session = onnxruntime.InferenceSession(path)
logits = session.run(None, {"x": x_test})[0]
print("onnxruntime accuracy:", float((logits.argmax(axis=1) == y_test).mean()))
print("largest difference from fastdl:", float(np.abs(logits - model(x_test)).max()))

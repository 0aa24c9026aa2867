"""The training loop written by hand: forward, loss, backward, clipped optimizer step, with the layer API."""
import numpy as np

import fastdl
from fastdl import losses

(x_train, y_train), (x_test, y_test) = fastdl.datasets.load_digits()
model = fastdl.Sequential(fastdl.Dense(64, 128, activation="relu", seed=0, dropout=0.1),
                          fastdl.Dense(128, 10, seed=1))
optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=5.0)
rng = np.random.default_rng(0)
for epoch in range(5):
    order = rng.permutation(len(x_train))
    total = 0.0
    for start in range(0, len(order), 32):
        batch = order[start:start + 32]
        logits = model(x_train[batch])                                          # forward
        loss, grad = losses.softmax_cross_entropy(logits, y_train[batch])       # loss and its gradient
        model.backward(grad, input_grad=False)                                  # every Parameter.grad
        optimizer.step()                                                        # one fused update
        total += loss * len(batch)
    print(f"epoch {epoch + 1}: loss {total / len(order):.4f}, grad norm {optimizer.last_grad_norm:.3f}")
print("test accuracy", fastdl.evaluate(model, x_test, y_test)["accuracy"])

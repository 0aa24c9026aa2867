"""A fastdl model to PyTorch and back, with a safetensors file in between (needs torch and safetensors)."""
import numpy as np
import safetensors.torch
import torch

import fastdl

model = fastdl.Sequential(fastdl.Dense(8, 32, activation="gelu", seed=0), fastdl.BatchNorm(32, activation="silu"),
                          fastdl.Dense(32, 3, seed=1))
x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
model(x)  # one training step's forward: the batch norm's running statistics move
model.eval()

torch_model = fastdl.interop.to_torch(model)  # Linear, GELU, BatchNorm1d, SiLU, Linear; eval mode as the model
print(torch_model)
with torch.no_grad():
    difference = np.abs(torch_model(torch.from_numpy(x)).numpy() - model(x)).max()
print(f"PyTorch vs fastdl, largest difference: {difference:.2e}")

fastdl.interop.save_safetensors(model, "mlp.safetensors")  # PyTorch's names and layout
torch_model.load_state_dict(safetensors.torch.load_file("mlp.safetensors"))
back = fastdl.interop.from_torch(torch_model)  # activations fused back into Dense and BatchNorm
print(back)
print("round trip exact:", bool((back(x) == model(x)).all()))

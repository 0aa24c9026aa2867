"""Parameter groups for the most common case: weight decay on the weight matrices only.

Decaying biases and normalization scales pulls them towards 0 for no benefit; the usual practice (BERT, GPT-2,
timm) exempts every parameter with fewer than two dimensions. ``weight_decay_groups`` builds the two groups in
PyTorch's form, so any optimizer with a ``weight_decay`` takes them.
"""


def decays_weight(name, parameter):
    """True for parameters that get weight decay: those with at least two dimensions (weight matrices). Biases,
    BatchNorm's scale and shift and learnable activations' parameters (one dimension or none) do not."""
    return len(parameter.shape) >= 2


def weight_decay_groups(model, weight_decay, rule=decays_weight):
    """``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]`` for
    ``model``'s parameters, split by ``rule(name, parameter)`` (default ``decays_weight``); an empty group is left
    out. ``AdamW(weight_decay_groups(model, 0.05), lr=1e-3)``."""
    decayed, others = [], []
    for name, parameter in model.named_parameters():
        (decayed if rule(name, parameter) else others).append(parameter)
    groups = []
    if decayed:
        groups.append({"params": decayed, "weight_decay": weight_decay})
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    return groups

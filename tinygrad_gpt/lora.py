"""LoRA on a whole model: wrap its projections, merge them back, store adapters alone.

`apply_lora(model, rank, alpha, targets)` freezes every weight of the model
and wraps the chosen Linear layers in `nn.LoRALinear` (the op is
ops/lora.py), so that only their small matrices lora_A and lora_B train.
`merge_lora` folds the adapters into the weights, leaving a plain model with
the base's state-dict names. `save_adapter` / `load_adapter` store the
adapters alone, a few KB that apply to the base they were trained on, which
is recognised by a SHA-256 of its weights.

A model's adapters are described by `lora_config(model)` (rank, alpha and the
wrapped layers' names); a checkpoint that stores it beside the weights can
rebuild the layers before loading them.
"""

import hashlib

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .nn import Linear, LoRALinear

# The attention and MLP projections of every block (c_proj names both kinds).
DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc")
ADAPTER_FORMAT = "tinygrad_gpt-lora-adapter"


def linear_layer_names(model):
    """The dotted names of the model's Linear layers (the possible LoRA targets)."""
    return [name[:-1] for name, m in model.named_modules() if isinstance(m, (Linear, LoRALinear))]


def _matches(name, target):
    return name == target or name.endswith("." + target)


def apply_lora(model, rank, alpha, targets=DEFAULT_LORA_TARGETS):
    """Freeze the whole model and wrap its Linear layers named by `targets` in LoRALinear.

    A target matches a layer whose dotted name is the target or ends with
    "." + target ("c_proj" matches attn.c_proj and mlp.c_proj of every block).
    Returns the wrapped layers' names. Everything is checked before the
    model changes: an unknown target or a bad rank raises ValueError.
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("--lora_targets must name at least one layer")
    names = linear_layer_names(model)
    for target in targets:
        if not any(_matches(name, target) for name in names):
            kinds = sorted({name.split(".", 3)[-1] if name.startswith("transformer.h.") else name for name in names})
            raise ValueError(f"unknown LoRA target {target!r}: no Linear layer is named so; choose from {kinds}")
    chosen = [name for name in names if any(_matches(name, t) for t in targets)]
    modules = dict(model.named_modules())
    for name in chosen:  # check every rank first, so a bad one leaves the model untouched
        layer = modules[name + "."]
        if isinstance(layer, LoRALinear):
            raise ValueError(f"layer {name} already has a LoRA adapter")
        largest = min(layer.in_features, layer.out_features)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= largest:
            raise ValueError(f"--lora_rank must be from 1 to {largest} (the smaller side of {name}), got {rank!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name + "."] if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return chosen


def merge_lora(model):
    """Fold every adapter into its weight (W + alpha/r B A), leaving a plain model; returns it.

    The merged model computes the same logits (up to rounding) with no extra
    matmuls, and its state dict has the base model's names, so it loads
    anywhere the base did. Every parameter trains again, as in a fresh model.
    """
    for name, module in list(model.named_modules()):
        for child_name, child in list(module._children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_config(model):
    """{"rank", "alpha", "targets"} of the model's adapters (the layers' names), or None."""
    layers = [(name[:-1], m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not layers:
        return None
    return {"rank": layers[0][1].rank, "alpha": layers[0][1].alpha, "targets": [name for name, _ in layers]}


def lora_state_dict(model):
    """Only the adapters: {name: array} of every lora_A and lora_B."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def base_fingerprint(model):
    """SHA-256 of the frozen weights (everything but the adapters), to recognise an adapter's base."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not name.endswith((".lora_A", ".lora_B")):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(p.data).data)
    return digest.hexdigest()


def save_adapter(path, model, extra=None):
    """Write the adapters alone (a few KB for a small model) with what is needed to apply them."""
    config = lora_config(model)
    if config is None:
        raise ValueError("the model has no LoRA adapters to save")
    metadata = {"format": ADAPTER_FORMAT, "lora": config, "model_config": model.config.to_dict(),
                "base_sha256": base_fingerprint(model), **(extra or {})}
    save_checkpoint(path, lora_state_dict(model), metadata)


def load_adapter(path, model):
    """Apply the adapter saved at `path` to `model`, its base; returns the adapter's metadata.

    Refuses (CheckpointError) a file that is not an adapter, or a model that is
    not the base the adapter was trained on (different config or weights).
    """
    arrays, metadata = load_checkpoint(path)
    if metadata.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{path} is not a LoRA adapter file")
    if metadata["model_config"] != model.config.to_dict():
        raise CheckpointError(f"adapter {path} was trained for a model of config {metadata['model_config']}, "
                              f"not {model.config.to_dict()}")
    if metadata["base_sha256"] != base_fingerprint(model):
        raise CheckpointError(f"adapter {path} was trained on other base weights than this model's")
    config = metadata["lora"]
    apply_lora(model, config["rank"], config["alpha"], config["targets"])
    adapters = {name: p for name, p in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}
    if set(arrays) != set(adapters) or any(arrays[k].shape != p.shape for k, p in adapters.items()):
        raise CheckpointError(f"adapter {path} is damaged: its arrays do not match its LoRA config")
    for name, p in adapters.items():
        p.data[...] = arrays[name]
    return metadata


def trainable_parameters(model):
    """The parameters an optimizer should update: those that require grad."""
    return [p for p in model.parameters() if p.requires_grad]


def optimizer_state_bytes(optimizer):
    """Bytes of the optimizer's per-parameter state (AdamW: exp_avg and exp_avg_sq)."""
    return sum(a.nbytes for a in optimizer.state_dict().values())

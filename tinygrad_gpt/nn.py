"""Layers: `Module` and the building blocks of a GPT, with PyTorch's names.

A `Module` finds its parameters and sub-modules by looking at its own
attributes, in the order they were set, so `named_parameters()` and
`state_dict()` produce PyTorch's dotted names (`h.0.attn.c_attn.weight`)
with no registration calls.
"""

import math

import numpy as np

from . import functional as F
from . import rng
from .ops.lora import LoRALinearOp
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a Module (requires_grad=True)."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


class Module:
    """Base class of every layer. Subclasses set attributes in `__init__` and write `forward`."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    # ---- walking the tree --------------------------------------------------
    def _children(self):
        """(name, value) for the attributes that are Parameters or Modules, in set order."""
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value.named_modules(f"{prefix}{name}.")

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _named_tensors(self, prefix=""):
        """Every (dotted name, Parameter), shared ones under each of their names."""
        for name, value in self._children():
            if isinstance(value, Parameter):
                yield prefix + name, value
            else:
                yield from value._named_tensors(f"{prefix}{name}.")

    def named_parameters(self):
        """(name, Parameter) pairs; a parameter shared by two layers (tied weights) once, first name."""
        seen = set()
        for name, p in self._named_tensors():
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    # ---- modes and gradients -----------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout on); `train(False)` is `eval()`."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode: dropout is the identity."""
        return self.train(False)

    def zero_grad(self):
        """Forget the accumulated gradients (set them to None, as PyTorch does by default)."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Convert every parameter to `dtype` (np.float32 or np.float64), in place."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Module.to: dtype must be float32 or float64, got {dtype}")
        for p in self.parameters():
            p.data, p.grad = p.data.astype(dtype), None
        return self

    # ---- saving and loading ------------------------------------------------
    def state_dict(self):
        """{dotted name: copy of the array}, tied weights under each name (as PyTorch)."""
        return {name: p.data.copy() for name, p in self._named_tensors()}

    def load_state_dict(self, state_dict):
        """Copy arrays into the parameters; every key must match by name and shape.

        Raises ValueError naming missing or unexpected keys or a shape
        mismatch, before changing anything.
        """
        own = dict(self._named_tensors())
        state_dict = {k: v.data if isinstance(v, Tensor) else v for k, v in state_dict.items()}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"load_state_dict: {' and '.join(parts)}")
        for name, p in own.items():
            shape = np.shape(state_dict[name])
            if shape != p.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {shape} in the state dict, "
                    f"but the model expects {p.shape}"
                )
        for name, p in own.items():
            p.data[...] = np.asarray(state_dict[name], dtype=p.dtype)
            p.grad = None

    # ---- display -----------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        children = [(n, v) for n, v in self._children() if isinstance(v, Module)]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


class ModuleList(Module):
    """A list of modules, named 0, 1, 2, ... in the state dict."""

    def __init__(self, modules):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        self._length = len(modules)

    def __len__(self):
        return self._length

    def __iter__(self):
        return (getattr(self, str(i)) for i in range(self._length))

    def __getitem__(self, i):
        return getattr(self, str(range(self._length)[i]))


class ModuleDict(Module):
    """Named modules, as attributes, in the order given."""

    def __init__(self, **modules):
        for name, m in modules.items():
            setattr(self, name, m)


def _uniform(shape, bound, dtype):
    gen = rng.get_generator()
    return rng.draw_into(np.empty(shape, dtype), lambda block_shape: gen.uniform(-bound, bound, block_shape))


class Linear(Module):
    """y = x @ weight^T + bias, weight (out_features, in_features) as in PyTorch.

    Initialized like PyTorch: uniform in +-1/sqrt(in_features).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table; forward looks up rows by index."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        weight = rng.draw_into(np.empty((num_embeddings, embedding_dim), dtype), rng.get_generator().standard_normal)
        self.weight = Parameter(weight)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer norm over the last dim, with a weight and an optional bias (as nanoGPT's)."""

    def __init__(self, normalized_shape, bias=True, eps=1e-5, dtype=np.float32):
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(np.ones(normalized_shape, dtype=dtype))  # (C,)
        self.bias = Parameter(np.zeros(normalized_shape, dtype=dtype)) if bias else None  # (C,)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode."""

    def __init__(self, p=0.5):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """GELU activation; approximate="tanh" for GPT-2's approximation."""

    def __init__(self, approximate="none"):
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class LoRALinear(Module):
    """A frozen Linear layer plus a trainable low-rank adapter (LoRA, Hu et al. 2021).

    y = x W^T + b + (alpha / rank) (x A^T) B^T, with lora_A (rank, in_features)
    random (PyTorch's Linear init, as PEFT) and lora_B (out_features, rank) zero,
    so at the start the layer computes exactly what `base` did. `weight` and
    `bias` are `base`'s own arrays, frozen (requires_grad False): only lora_A
    and lora_B train. `merged()` folds the adapter back into a plain Linear.
    The state dict keeps the base names (`weight`, `bias`) beside `lora_A` and
    `lora_B`, so the base weights load into it unchanged.
    """

    def __init__(self, base, rank, alpha):
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base must be a Linear layer, got {type(base).__name__}")
        largest = min(base.in_features, base.out_features)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= largest:
            raise ValueError(
                f"LoRALinear: rank must be an integer from 1 to {largest} (the smaller side of the "
                f"{base.out_features}x{base.in_features} weight), got {rank!r}"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"LoRALinear: alpha must be a positive number, got {alpha!r}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scale = int(rank), float(alpha), alpha / rank
        self.weight = base.weight.requires_grad_(False)
        self.bias = base.bias.requires_grad_(False) if base.bias is not None else None
        dtype = base.weight.dtype
        self.lora_A = Parameter(_uniform((rank, base.in_features), 1 / math.sqrt(base.in_features), dtype))
        self.lora_B = Parameter(np.zeros((base.out_features, rank), dtype=dtype))

    def forward(self, x):
        bias = () if self.bias is None else (self.bias,)
        return LoRALinearOp.apply(x, self.weight, self.lora_A, self.lora_B, *bias, scale=self.scale)

    def merged(self):
        """A plain Linear whose weight is W + (alpha / rank) B A: the same function, one matmul."""
        layer = Linear.__new__(Linear)
        layer.in_features, layer.out_features = self.in_features, self.out_features
        delta = self.scale * (self.lora_B.data.astype(np.float64) @ self.lora_A.data.astype(np.float64))  # (out, in)
        layer.weight = Parameter((self.weight.data + delta).astype(self.weight.dtype))  # (out, in)
        layer.bias = Parameter(self.bias.data.copy()) if self.bias is not None else None
        return layer

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, rank={self.rank}, alpha={self.alpha:g}")

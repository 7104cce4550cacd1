"""tinygrad_gpt: a small GPT built from scratch on NumPy, every gradient written by hand.

    import tinygrad_gpt as tg
    x = tg.Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()   # x.grad == 2 * x
"""

from . import _allocator  # noqa: F401  (first: tunes malloc for the many large arrays of a step)
from . import ops  # attaches the operator methods to Tensor
from . import functional
from .functional import cat, stack
from .gradcheck import GradcheckError, gradcheck
from .rng import manual_seed
from .tensor import Function, Tensor, no_grad, unbroadcast

__all__ = [
    "Tensor", "Function", "no_grad", "unbroadcast", "gradcheck", "GradcheckError",
    "manual_seed", "functional", "cat", "stack", "ops",
]

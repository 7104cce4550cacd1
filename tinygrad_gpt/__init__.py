"""tinygrad_gpt: a small GPT built from scratch on NumPy, every gradient written by hand.

    import tinygrad_gpt as tg
    x = tg.Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()   # x.grad == 2 * x

Importing the package changes nothing outside it (no environment variable, allocator
or Numba setting). A training program calls `tinygrad_gpt.tune_process()` first for
the process-wide settings that make it fast (kernels/tuning/process.py); the ops run
on the fast Numba kernels unless `tinygrad_gpt.kernels.use("reference")` (or
TINYGPT_KERNELS=reference) picks the plain-NumPy ones (kernels/__init__.py).
"""

from . import ops  # attaches the operator methods to Tensor
from . import functional, kernels
from .functional import cat, stack
from .gradcheck import GradcheckError, gradcheck
from .kernels.tuning import tune_process
from .rng import manual_seed
from .tensor import Function, Tensor, no_grad, unbroadcast

__all__ = [
    "Tensor", "Function", "no_grad", "unbroadcast", "gradcheck", "GradcheckError",
    "manual_seed", "functional", "cat", "stack", "ops", "kernels", "tune_process",
]

"""The fast kernels: Numba-compiled versions of every function in reference.py.

Same names, signatures and results (to rounding) as the references; the tests hold
each to its reference in float32 and float64 (tests/test_kernels.py). Importing this
module imports Numba; `kernels.use("fast")` (the default) does that at the first
kernel call, not at `import tinygrad_gpt`.

| module          | kernels                                                        |
|-----------------|----------------------------------------------------------------|
| gemm            | matmul (the dispatcher the ops call), gemm, bmm                |
| softmax         | softmax_forward (optional causal mask), softmax_backward       |
| layernorm       | layernorm_forward, layernorm_backward                          |
| gelu            | gelu_forward, gelu_backward ("none" = erf, "tanh")             |
| cross_entropy   | cross_entropy_forward, cross_entropy_backward (ignore_index)   |
| embedding       | embedding_backward (deterministic scatter-add)                 |
| adamw           | adamw_step (in place)                                          |
| attention       | attention_forward, attention_backward (fused per head)         |

The machinery under them (threads, CPU target and GEMM tile, the stack intrinsic,
aligned arrays, the matmul dispatch rule, the allocator) is in tuning/.
"""

from .tuning.target import configure_numba

configure_numba()  # before any kernel compiles: the SLP vectorizer on AVX2 targets (tuning/target.py)

from .adamw import adamw_step  # noqa: E402
from .attention import attention_backward, attention_forward  # noqa: E402
from .cross_entropy import cross_entropy_backward, cross_entropy_forward  # noqa: E402
from .embedding import embedding_backward  # noqa: E402
from .gelu import gelu_backward, gelu_forward  # noqa: E402
from .gemm import bmm, gemm, matmul  # noqa: E402
from .layernorm import layernorm_backward, layernorm_forward  # noqa: E402
from .softmax import softmax_backward, softmax_forward  # noqa: E402
from .tuning.dispatch import uses_numba_gemm  # noqa: E402

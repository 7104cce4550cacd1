"""A small array on the stack of the running kernel, which LLVM can keep in registers.

Why: the GEMM micro-kernel (gemm.py) accumulates a 4 x 64 tile of C over the whole
k loop. Held in an array from `np.empty` (the heap), every step of k loads and stores
the tile: LLVM cannot prove the heap array does not overlap the operands it reads, so it
may not keep the values in registers. An array on the stack of the kernel cannot
overlap anything the kernel was given, and when every access to it uses an index known
at compile time (loops of constant trip count, unrolled) LLVM promotes its elements to
registers: the 4 x 64 float32 tile becomes 16 512-bit registers and the k loop is
nothing but loads of the operands and FMAs.

Numba has no stack arrays of its own; `stack_empty` below is a Numba intrinsic, a few
lines that ask LLVM for an `alloca` of a compile-time size in the calling function's
entry block. The memory is uninitialised and lives until that function returns: use it
only inside the function that calls `stack_empty`, never return it or store it.
"""

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import carray


@intrinsic
def _stack_pointer(typingctx, size, dtype):
    """A pointer to `size` uninitialised elements of `dtype` on the caller's stack (size a compile-time int)."""
    if not isinstance(size, types.IntegerLiteral):
        return None  # asks Numba to retry with the literal value of size
    n = size.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=n)

    return types.CPointer(dtype.dtype)(size, dtype), codegen


def stack_empty(n, dtype):
    """An uninitialised 1-D array of n elements of dtype; on the stack in compiled code, n a compile-time constant.

    This Python body is what runs with NUMBA_DISABLE_JIT=1 (a heap array does the same
    job there); compiled kernels get the overload below.
    """
    return np.empty(n, dtype)


# inline="always" puts the allocation into the caller's frame (a function of its own would
# return a pointer into its finished frame); prefer_literal keeps n a compile-time constant.
@overload(stack_empty, inline="always", prefer_literal=True)
def _stack_empty_compiled(n, dtype):
    def implementation(n, dtype):
        return carray(_stack_pointer(n, dtype), (n,))

    return implementation

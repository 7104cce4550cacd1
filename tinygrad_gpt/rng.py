"""The library's one random number generator (weight init, dropout, sampling).

Keeping one seeded `np.random.Generator` here, rather than NumPy's global
state, makes runs reproducible: `manual_seed(s)` fixes everything, and the
generator's state can be saved in a checkpoint and restored on resume.
"""

import numpy as np

_generator = np.random.default_rng(1337)


def manual_seed(seed):
    """Reseed the library's generator (as `torch.manual_seed`)."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def get_generator():
    """The generator every random draw in the library uses."""
    return _generator


# Elements drawn per call by `draw_into`: 8 MB of float64 at a time, however large the array.
DRAW_CHUNK_ELEMENTS = 1 << 20


def draw_into(out, draw):
    """out[...] = draw(out.shape), a block of rows at a time; returns out.

    A Generator draws in C order, so the numbers are those of one call, but the float64
    temporary is one block instead of the whole array (GPT-2's token embedding table
    alone would need 309 MB of it, twice its float32 size).
    """
    rows = max(1, DRAW_CHUNK_ELEMENTS // max(1, int(np.prod(out.shape[1:]))))
    for start in range(0, out.shape[0], rows):
        block = out[start : start + rows]
        block[...] = draw(block.shape)
    return out


def get_rng_state():
    """The generator's state as a JSON-serializable dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by `get_rng_state`."""
    bit_generator = np.random.PCG64()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"invalid random generator state: {error}") from None
    _generator.bit_generator.state = bit_generator.state

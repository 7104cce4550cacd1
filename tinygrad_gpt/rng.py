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

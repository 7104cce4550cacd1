"""The check every tokenizer's `decode` makes of the ids it is given."""

import numpy as np

# How many offending ids an error message shows.
MAX_SHOWN = 5


def checked_ids(ids, vocab_size):
    """`ids` (a list or 1-D integer array) as an array, each in [0, vocab_size), or a clear error."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return ids.reshape(0).astype(np.int64)  # (0,): np.asarray([]) is float
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D (one sequence), got an array of shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be integers, got an array of dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        shown = sorted({int(i) for i in ids[bad]})[:MAX_SHOWN]
        raise ValueError(f"ids must lie in [0, {vocab_size}) for this vocabulary, got out-of-range id(s) {shown}")
    return ids

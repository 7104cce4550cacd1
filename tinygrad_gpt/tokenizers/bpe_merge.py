"""Applying BPE merges to pre-tokenized pieces: a readable reference and a compiled kernel.

The rule for one piece: start from the token ids of its bytes, and while some adjacent
pair has a merge, replace the leftmost occurrence of the lowest-ranked one by the merged
token. GPT-2's own code replaces *every* occurrence of that pair before looking again;
the two give the same tokens because a merge only joins tokens that lower-ranked merges
made (``BPETokenizer`` checks this), so the pairs a merge creates rank above it and the
next lowest pair is the next occurrence of the same one while there is one. Merging one
occurrence at a time means only the two pairs beside it change.

:func:`merge_pieces_ref` is that rule in plain Python, one piece at a time.
:func:`merge_pieces` is the same loop compiled with Numba over many pieces at once (the
distinct pieces of a text not seen before); in pure Python the loop costs about three
times as long as tiktoken's whole encoding.

The merge table, for both: ``pair_keys`` (M,) sorted int64 keys ``left * vocab_size +
right`` of every mergeable pair of ids, ``pair_ranks`` (M,) the rank of each key's merge,
and ``merged_id_of_rank`` (M,) the id that merge ``r`` makes.
"""

import numpy as np
from numba import njit

# The rank of a pair that has no merge: above every real rank.
NO_MERGE = np.iinfo(np.int64).max


def merge_pieces_ref(pieces, byte_ids, pair_keys, pair_ranks, merged_id_of_rank, vocab_size):
    """The BPE token ids of each piece in ``pieces`` (a list of bytes), as a list of lists."""
    rank_of = dict(zip(pair_keys.tolist(), pair_ranks.tolist()))
    results = []
    for piece in pieces:
        ids = [int(byte_ids[byte]) for byte in piece]
        # ranks[i]: the rank of the merge of (ids[i], ids[i + 1]), or NO_MERGE.
        ranks = [rank_of.get(left * vocab_size + right, NO_MERGE) for left, right in zip(ids, ids[1:])]
        while ranks and min(ranks) != NO_MERGE:
            best = min(ranks)
            i = ranks.index(best)  # the leftmost occurrence
            ids[i : i + 2] = [int(merged_id_of_rank[best])]
            del ranks[i]
            if i > 0:
                ranks[i - 1] = rank_of.get(ids[i - 1] * vocab_size + ids[i], NO_MERGE)
            if i < len(ranks):
                ranks[i] = rank_of.get(ids[i] * vocab_size + ids[i + 1], NO_MERGE)
        results.append(ids)
    return results


@njit(cache=True)
def _rank_of(left, right, pair_keys, pair_ranks, vocab_size):
    """The rank of the merge of ids (left, right), found by binary search in the sorted keys, or NO_MERGE."""
    key = left * vocab_size + right
    j = np.searchsorted(pair_keys, key)
    if j < pair_keys.shape[0] and pair_keys[j] == key:
        return pair_ranks[j]
    return NO_MERGE


@njit(cache=True)
def _merge_pieces_kernel(piece_bytes, starts, byte_ids, pair_keys, pair_ranks, merged_id_of_rank, vocab_size):
    """Merge piece p = piece_bytes[starts[p]:starts[p + 1]] in place in ids; return ids and each piece's length."""
    ids = np.empty(piece_bytes.shape[0], dtype=np.int64)  # (total bytes,) piece p's ids start at starts[p]
    lengths = np.empty(starts.shape[0] - 1, dtype=np.int64)  # (P,)
    ranks = np.empty(piece_bytes.shape[0], dtype=np.int64)  # (total bytes,) scratch, same layout as ids
    for p in range(starts.shape[0] - 1):
        s, n = starts[p], starts[p + 1] - starts[p]
        for i in range(n):
            ids[s + i] = byte_ids[piece_bytes[s + i]]
        for i in range(n - 1):
            ranks[s + i] = _rank_of(ids[s + i], ids[s + i + 1], pair_keys, pair_ranks, vocab_size)
        while n > 1:
            best = s  # the leftmost lowest rank among the n - 1 pairs
            for i in range(s + 1, s + n - 1):
                if ranks[i] < ranks[best]:
                    best = i
            if ranks[best] == NO_MERGE:
                break
            ids[best] = merged_id_of_rank[ranks[best]]
            # Close the gap the right half of the pair leaves, in ids and in ranks.
            for i in range(best + 1, s + n - 1):
                ids[i] = ids[i + 1]
            for i in range(best, s + n - 2):
                ranks[i] = ranks[i + 1]
            n -= 1
            if best > s:
                ranks[best - 1] = _rank_of(ids[best - 1], ids[best], pair_keys, pair_ranks, vocab_size)
            if best < s + n - 1:
                ranks[best] = _rank_of(ids[best], ids[best + 1], pair_keys, pair_ranks, vocab_size)
        lengths[p] = n
    return ids, lengths


def merge_pieces(pieces, byte_ids, pair_keys, pair_ranks, merged_id_of_rank, vocab_size):
    """The BPE token ids of each piece in ``pieces`` (a list of bytes), as a list of lists, compiled."""
    starts = np.zeros(len(pieces) + 1, dtype=np.int64)  # (P + 1,)
    np.cumsum([len(piece) for piece in pieces], out=starts[1:])
    piece_bytes = np.frombuffer(b"".join(pieces), dtype=np.uint8)  # (total bytes,)
    ids, lengths = _merge_pieces_kernel(
        piece_bytes, starts, byte_ids, pair_keys, pair_ranks, merged_id_of_rank, vocab_size
    )
    flat = ids.tolist()
    return [flat[start : start + length] for start, length in zip(starts.tolist(), lengths.tolist())]

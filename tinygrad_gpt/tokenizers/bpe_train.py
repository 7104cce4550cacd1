"""Learning BPE merges from a corpus, with pair counts kept up to date incrementally.

The textbook algorithm: split the corpus into GPT-2's pre-tokenized pieces, write each
piece as its bytes, count every adjacent pair of tokens, merge the most frequent pair
into a new token everywhere, and repeat. Recounting the whole corpus for every merge
costs (corpus size) x (merges). Instead this file works on the *distinct* pieces with
their frequencies (Tiny Shakespeare's 1.1 MB is 15,000 distinct pieces) and, when a merge
is made, revisits only the pieces that contain the merged pair: it subtracts their old
pairs from the counts and adds their new ones. An index from each pair to the pieces
holding it finds those pieces, and a heap finds the most frequent pair.

Tie-breaking rule: among pairs of equal count, the pair ``(left id, right id)`` that
compares smallest wins (smallest left id, then smallest right id). Ids 0..255 are the
bytes numbered as GPT-2 numbers them (``BYTES_IN_ID_ORDER``) and merge ``r`` makes id
``256 + r``, so a pair of older tokens beats a pair of newer ones. This is the rule of
Hugging Face's trainer, which numbers the bytes the same way, so the two learn the same
merges in the same order. The result is a function of the text.
"""

import heapq
from collections import Counter

from .bytelevel import BYTES_IN_ID_ORDER, GPT2_SPLIT

# Token id of each byte value, the inverse of BYTES_IN_ID_ORDER.
_ID_OF_BYTE = [BYTES_IN_ID_ORDER.index(byte) for byte in range(256)]


def learn_merges(texts, num_merges):
    """Up to ``num_merges`` merges learned from ``texts`` (strings, each pre-tokenized apart).

    Returns the merges in the order made, as pairs of token ids: id ``i`` < 256 is the
    byte ``BYTES_IN_ID_ORDER[i]``, and merge ``r`` creates id ``256 + r``. Fewer merges come back when no adjacent pair
    is left (every piece has become a single token).
    """
    piece_counts = Counter()
    for text in texts:
        piece_counts.update(GPT2_SPLIT.findall(text))
    words = [[_ID_OF_BYTE[byte] for byte in piece.encode("utf-8")] for piece in piece_counts]  # each as token ids
    frequencies = list(piece_counts.values())  # how often each distinct piece occurs

    # pair_counts[pair]: occurrences of the pair in the corpus (a piece counts as often as it occurs).
    # pieces_with[pair]: the indices of the distinct pieces that contain the pair.
    pair_counts, pieces_with = Counter(), {}
    for index, (word, frequency) in enumerate(zip(words, frequencies)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += frequency
            pieces_with.setdefault(pair, set()).add(index)
    # A max-heap by count via negated counts; the tuple order is the tie-breaking rule.
    # Entries go stale when a count changes: the new count is pushed, and an entry
    # whose count no longer matches pair_counts is thrown away when it reaches the top.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < num_merges:
        best = _pop_most_frequent(heap, pair_counts)
        if best is None:
            break
        new_id = 256 + len(merges)
        merges.append(best)
        changed = set()
        for index in pieces_with.pop(best):
            old_word = words[index]
            new_word = _merge_pair(old_word, best, new_id)
            words[index] = new_word
            old_pairs, new_pairs = Counter(zip(old_word, old_word[1:])), Counter(zip(new_word, new_word[1:]))
            frequency = frequencies[index]
            for pair, n in old_pairs.items():
                pair_counts[pair] -= n * frequency
                if pair not in new_pairs and pair != best:
                    pieces_with[pair].discard(index)
            for pair, n in new_pairs.items():
                pair_counts[pair] += n * frequency
                pieces_with.setdefault(pair, set()).add(index)
            changed.update(old_pairs, new_pairs)
        del pair_counts[best]
        changed.discard(best)
        for pair in changed:
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
    return merges


def _pop_most_frequent(heap, pair_counts):
    """Pop the heap down to its first up-to-date entry and return that pair, or None if none is left."""
    while heap:
        negated_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) == -negated_count:
            return pair
    return None


def _merge_pair(word, pair, new_id):
    """``word`` with every occurrence of ``pair``, left to right, replaced by ``new_id``."""
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged

"""The character-level tokenizer used by nanoGPT's Shakespeare demo.

Every distinct character of the training text is one token. It is the simplest
tokenizer that works, and it makes a tiny model's mistakes easy to read.
"""

import numpy as np

from .ids import checked_ids

# How many offending characters an error message shows before saying "and N more".
_MAX_CHARS_IN_ERROR = 5


class CharTokenizer:
    """Character-level tokenizer: token id ``i`` is the character ``chars[i]``.

    Build one from a corpus with :meth:`from_text`, which takes the sorted set of the
    corpus's characters, so the same text always gives the same vocabulary. Save it
    with :meth:`to_dict` (plain JSON types) and restore it with :meth:`from_dict`; the
    restored tokenizer maps every character to the same id, which a checkpoint needs.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.chars, tok.vocab_size
    ('ehlo', 4)
    >>> tok.encode("hole").tolist()
    [1, 3, 2, 0]
    >>> tok.decode([1, 3, 2, 0])
    'hole'
    """

    # A character vocabulary has no end-of-text token; the shared interface says so with None.
    eot_token = None

    def __init__(self, chars):
        """Make a tokenizer whose vocabulary is ``chars``, in that order.

        ``chars`` is a non-empty string with no repeated character; the position of a
        character in it is its token id.
        """
        if not isinstance(chars, str):
            raise TypeError(f"chars must be a str of distinct characters, got {type(chars).__name__}")
        if len(chars) == 0:
            raise ValueError("chars must be a non-empty str, got the empty string")
        if len(set(chars)) != len(chars):
            seen, repeated = set(), []
            for ch in chars:
                if ch in seen and ch not in repeated:
                    repeated.append(ch)
                seen.add(ch)
            raise ValueError(
                f"chars must not repeat a character, but {_describe_chars(repeated)} appear more than once"
            )
        self.chars = chars
        # Vectorized encoding: instead of a Python dict lookup per character, look each
        # code point up in the sorted array of vocabulary code points with
        # np.searchsorted, then map that sorted position back to the token id.
        codes = np.array([ord(ch) for ch in chars], dtype=np.int64)  # (V,)
        order = np.argsort(codes)  # (V,) token ids in code-point order
        self._sorted_codes = codes[order]  # (V,)
        self._id_of_sorted = order.astype(np.int64)  # (V,)
        # Decoding indexes this array of one-character strings with the ids.
        self._char_array = np.array(list(chars), dtype=object)  # (V,)

    @classmethod
    def from_text(cls, text):
        """Build the vocabulary of ``text``: its distinct characters in sorted order."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if len(text) == 0:
            raise ValueError("text must be non-empty to build a vocabulary from it, got the empty string")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self):
        """Number of distinct tokens, ``len(chars)``."""
        return len(self.chars)

    def encode(self, text):
        """Map a string to its token ids, a 1-D ``int64`` array of length ``len(text)``.

        Raises ``ValueError`` naming the characters of ``text`` that are not in the
        vocabulary (a model cannot read a token it was never given an embedding for).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        # UTF-32 stores every character as one 4-byte code point, so the bytes *are*
        # the code point array. "surrogatepass" lets lone surrogates through as their
        # own code points (they are legal in a Python str).
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)  # (N,)
        pos = np.searchsorted(self._sorted_codes, codes)  # (N,) where each code would sit
        pos = np.minimum(pos, self.vocab_size - 1)  # codes past the largest one land out of range
        known = self._sorted_codes[pos] == codes  # (N,)
        if not known.all():
            unknown = list(dict.fromkeys(text[i] for i in np.flatnonzero(~known)))  # first-occurrence order
            raise ValueError(
                f"text contains {len(unknown)} distinct character(s) not in the tokenizer's vocabulary "
                f"of {self.vocab_size} characters: {_describe_chars(unknown)}"
            )
        return self._id_of_sorted[pos]  # (N,) int64

    def decode(self, ids):
        """Map token ids (a list or 1-D integer array) back to the string they encode."""
        ids = checked_ids(ids, self.vocab_size)  # (N,)
        return "".join(self._char_array[ids])

    def to_dict(self):
        """A JSON-serializable description, ``{"type": "char", "chars": ...}``."""
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d):
        """Rebuild the tokenizer that :meth:`to_dict` described, checking the input."""
        if not isinstance(d, dict):
            raise TypeError(f"tokenizer description must be a dict, got {type(d).__name__}")
        if set(d) != {"type", "chars"}:
            raise ValueError(f"tokenizer description must have exactly the keys 'type' and 'chars', got {sorted(d)}")
        if d["type"] != "char":
            raise ValueError(f"tokenizer description has type {d['type']!r}, expected 'char'")
        return cls(d["chars"])

    def __eq__(self, other):
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self.chars == other.chars

    def __hash__(self):
        return hash(self.chars)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _describe_chars(chars):
    """Up to a few characters, repr'd and comma-separated, for an error message."""
    shown = ", ".join(repr(ch) for ch in chars[:_MAX_CHARS_IN_ERROR])
    extra = len(chars) - _MAX_CHARS_IN_ERROR
    return shown + (f" and {extra} more" if extra > 0 else "")

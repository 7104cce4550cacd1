"""GPT-2's byte-level byte-pair encoding (BPE) tokenizer.

A BPE vocabulary starts from the 256 byte values and a ranked list of merges: merge
number ``r`` says "where token A is followed by token B, write the token AB instead".
Encoding a piece of text (one piece of GPT-2's pre-tokenization, see ``bytelevel.py``)
starts from its UTF-8 bytes and keeps applying the lowest-ranked merge that any adjacent
pair of its tokens allows, until no pair has a merge. Decoding concatenates the tokens'
bytes. Every string survives the round trip, because every byte is a token.

Special tokens such as GPT-2's ``<|endoftext|>`` (id 50256) are whole strings with an id
but no bytes-level meaning: no merge produces them. They follow tiktoken's rules: text
that contains a special token's string is refused unless the caller allows it (then it
becomes the special id) or disallows nothing (then it is encoded as ordinary text).

The vocabulary files are GPT-2's ``encoder.json`` + ``vocab.bpe``, which Hugging Face
ships under the names ``vocab.json`` + ``merges.txt``: a JSON object from each token's
string (its bytes through GPT-2's byte-to-unicode map) to its id, and one merge per
line, ``left right``, in rank order, after an optional ``#version`` line.
"""

import itertools
import json
import os
from pathlib import Path

import numpy as np
import regex

from .bpe_merge import merge_pieces
from .bpe_train import learn_merges
from .bytelevel import BYTE_TO_CHAR, BYTES_IN_ID_ORDER, CHAR_TO_BYTE, GPT2_SPLIT
from .ids import checked_ids

# How many offending ids or tokens an error message lists.
_MAX_IN_ERROR = 5
# The 256 characters that stand for bytes in a token's string.
_BYTE_LEVEL_CHARS = frozenset(CHAR_TO_BYTE)


class BPETokenizer:
    """Byte-level BPE exactly as GPT-2 does it: same pre-tokenization, byte map and merge order.

    Load GPT-2's (or any Hugging Face byte-level BPE) vocabulary with :meth:`from_files`,
    or learn one from a corpus with :meth:`train`; write it with :meth:`save`.

    >>> tok = BPETokenizer.train("low lower lowest", vocab_size=260, special_tokens=())
    >>> tok.merges[:2]
    [('l', 'o'), ('lo', 'w')]
    >>> tok.decode(tok.encode("slow"))
    'slow'
    """

    def __init__(self, vocab, merges):
        """Make a tokenizer from ``vocab``, token string -> id, and ``merges``, (left, right) pairs by rank.

        The ids must be 0..len(vocab)-1, all 256 byte tokens must be present, and every
        merge must join two tokens of the vocabulary into a third. Tokens that are
        neither a byte nor a merge's result are special tokens, e.g. ``<|endoftext|>``.
        """
        if not isinstance(vocab, dict):
            raise TypeError(f"vocab must be a dict from token string to id, got {type(vocab).__name__}")
        if not isinstance(merges, (list, tuple)):
            raise TypeError(f"merges must be a list of (left, right) token pairs, got {type(merges).__name__}")
        _check_vocab(vocab)
        merges = [tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in merges]
        for rank, pair in enumerate(merges):
            problem = _merge_problem(vocab, pair)
            if problem:
                raise ValueError(f"merge {rank} {pair!r} {problem}")
        _check_merge_order(merges)
        self.vocab = dict(vocab)
        self.merges = merges

        # Encoding works on ids: the id of each byte, and the merge table bpe_merge.py
        # searches, keyed by left * vocab_size + right (stable sort: if a pair is listed
        # twice, its lower rank is found first).
        size = len(vocab)
        self._byte_ids = np.array([vocab[BYTE_TO_CHAR[byte]] for byte in range(256)], dtype=np.int64)  # (256,)
        keys = np.array([vocab[left] * size + vocab[right] for left, right in merges], dtype=np.int64)  # (M,)
        self._pair_ranks = np.argsort(keys, kind="stable")  # (M,) the rank of each sorted key
        self._pair_keys = keys[self._pair_ranks]  # (M,)
        self._merged_id_of_rank = np.array([vocab[left + right] for left, right in merges], dtype=np.int64)  # (M,)
        merged = {left + right for left, right in merges}
        self.special_tokens = {
            token: i
            for token, i in vocab.items()
            if token not in merged and not (len(token) == 1 and token in CHAR_TO_BYTE)
        }
        # Decoding indexes this array of each id's bytes. A special token's bytes are its
        # string's UTF-8; every other token's string is its bytes through the byte map.
        token_bytes = [b""] * len(vocab)
        for token, i in vocab.items():
            if token in self.special_tokens:
                token_bytes[i] = token.encode("utf-8")
            else:
                token_bytes[i] = bytes(CHAR_TO_BYTE[char] for char in token)
        self._token_bytes = np.array(token_bytes, dtype=object)  # (V,)
        # Longest first, so a special token that contains another one wins the match.
        by_length = sorted(self.special_tokens, key=len, reverse=True)
        self._special_split = regex.compile("(" + "|".join(map(regex.escape, by_length)) + ")") if by_length else None
        # Each distinct pre-tokenized piece is merged once; later occurrences are looked up.
        self._cache = {}

    # ----- building and saving -----

    @classmethod
    def from_files(cls, vocab_path, merges_path):
        """Load GPT-2's ``encoder.json`` + ``vocab.bpe`` (or Hugging Face's ``vocab.json`` + ``merges.txt``)."""
        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise FileNotFoundError(f"BPE vocabulary file {path} does not exist")
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{vocab_path} line {error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(vocab, dict):
            raise ValueError(
                f"{vocab_path} must hold a JSON object from token string to id, got a {type(vocab).__name__}"
            )
        try:
            _check_vocab(vocab)
        except ValueError as error:
            raise ValueError(f"{vocab_path}: {error}") from None
        merges = []
        # read_text reads Windows line ends "\r\n" as "\n" too.
        for line_number, line in enumerate(merges_path.read_text(encoding="utf-8").split("\n"), start=1):
            if (line_number == 1 and line.startswith("#version")) or line == "":
                continue
            pair = tuple(line.split(" "))
            if len(pair) != 2 or "" in pair:
                raise ValueError(
                    f"{merges_path} line {line_number}: expected two tokens separated by one space, got {line!r}"
                )
            problem = _merge_problem(vocab, pair)
            if problem:
                raise ValueError(f"{merges_path} line {line_number}: merge {pair!r} {problem} of {vocab_path}")
            merges.append(pair)
        try:
            return cls(vocab, merges)
        except ValueError as error:  # merges out of learning order
            raise ValueError(f"{merges_path}: {error}") from None

    @classmethod
    def train(cls, text, vocab_size, special_tokens=("<|endoftext|>",)):
        """Learn a vocabulary of ``vocab_size`` tokens from ``text``: 256 bytes, merges, then ``special_tokens``.

        Each merge joins a most frequent adjacent pair at the moment it is made; ties go
        to the smallest pair of ids, as in Hugging Face's trainer (see ``bpe_train.py``). The special tokens' strings
        are cut out of ``text`` before counting, so no merge learns a piece of one. If
        the text runs out of pairs first, the vocabulary is smaller than asked.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(special_tokens, str) or not all(isinstance(s, str) and s for s in special_tokens):
            raise TypeError(f"special_tokens must be a list of non-empty str, got {special_tokens!r:.80}")
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens must not repeat a token, got {special_tokens!r:.80}")
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size must be an int of at least 256 bytes + {len(special_tokens)} special token(s) "
                f"= {256 + len(special_tokens)}, got {vocab_size!r}"
            )
        pieces = regex.split("|".join(map(regex.escape, special_tokens)), text) if special_tokens else [text]
        merged_ids = learn_merges(pieces, vocab_size - 256 - len(special_tokens))
        # Ids 0..255 are the bytes in GPT-2's order; merge r makes id 256 + r.
        strings = [BYTE_TO_CHAR[byte] for byte in BYTES_IN_ID_ORDER]
        for left, right in merged_ids:
            strings.append(strings[left] + strings[right])
        vocab = {string: i for i, string in enumerate(strings)}
        for token in special_tokens:
            if token in vocab:
                raise ValueError(f"special token {token!r} is also the string of an ordinary token; choose another")
            vocab[token] = len(vocab)
        return cls(vocab, [(strings[left], strings[right]) for left, right in merged_ids])

    def save(self, directory):
        """Write ``vocab.json`` and ``merges.txt`` into ``directory`` (made if needed); return their paths.

        They are the files Hugging Face's ``tokenizers`` reads for a byte-level BPE, and
        :meth:`from_files` reads them back. Each file is written beside itself first and
        then renamed, so an interrupted save never leaves half a file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        _write_atomically(vocab_path, json.dumps(self.vocab, ensure_ascii=False))
        _write_atomically(merges_path, "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in self.merges))
        return vocab_path, merges_path

    def to_dict(self):
        """A JSON-serializable description: ``{"type": "bpe", "vocab": {...}, "merges": [[left, right], ...]}``."""
        return {"type": "bpe", "vocab": dict(self.vocab), "merges": [list(pair) for pair in self.merges]}

    @classmethod
    def from_dict(cls, d):
        """Rebuild the tokenizer that :meth:`to_dict` described, checking the input."""
        if not isinstance(d, dict):
            raise TypeError(f"tokenizer description must be a dict, got {type(d).__name__}")
        if set(d) != {"type", "vocab", "merges"}:
            raise ValueError(
                f"tokenizer description must have exactly the keys 'type', 'vocab' and 'merges', got {sorted(d)}"
            )
        if d["type"] != "bpe":
            raise ValueError(f"tokenizer description has type {d['type']!r}, expected 'bpe'")
        return cls(d["vocab"], d["merges"])

    # ----- the shared tokenizer interface -----

    @property
    def vocab_size(self):
        """Number of token ids, bytes and merges and special tokens together."""
        return len(self.vocab)

    @property
    def eot_token(self):
        """The id of ``<|endoftext|>`` if it is a special token here, else None."""
        return self.special_tokens.get("<|endoftext|>")

    def encode(self, text, allowed_special=(), disallowed_special="all"):
        """Map a string to its token ids, a 1-D ``int64`` array.

        As in tiktoken: ``allowed_special`` (a set of special token strings, or "all")
        are encoded as their ids where they occur; a ``disallowed_special`` one (by
        default every special token not allowed) makes encoding fail, because such text
        is usually untrusted input that should not be able to end a document; pass
        ``disallowed_special=()`` to encode its string as ordinary text instead.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        disallowed = (
            set(self.special_tokens) - allowed
            if disallowed_special == "all"
            else self._special_set(disallowed_special, "disallowed_special")
        )
        for token in sorted(disallowed):
            if token in text:
                raise ValueError(
                    f"text contains the special token {token!r}; pass allowed_special={{{token!r}}} to encode it "
                    f"as id {self.special_tokens[token]}, or disallowed_special=() to encode it as ordinary text"
                )
        ids = []
        try:
            if allowed:
                # The split keeps the separators: odd positions are the special tokens.
                for position, part in enumerate(self._special_split.split(text)):
                    if position % 2 == 1 and part in allowed:
                        ids.append(self.special_tokens[part])
                    else:
                        self._encode_ordinary(part, ids)
            else:
                self._encode_ordinary(text, ids)
        except UnicodeEncodeError as error:
            raise ValueError(
                f"text contains the lone surrogate {error.object[error.start]!r}, which has no UTF-8 encoding; "
                "only valid Unicode text can be encoded"
            ) from None
        return np.array(ids, dtype=np.int64)  # (N,)

    def decode(self, ids):
        """Map token ids (a list or 1-D integer array) back to text.

        Bytes that do not form valid UTF-8 (a token sequence cut inside a character)
        become U+FFFD, as GPT-2 does.
        """
        ids = checked_ids(ids, self.vocab_size)  # (N,)
        return b"".join(self._token_bytes[ids]).decode("utf-8", errors="replace")

    # ----- encoding, step by step -----

    def _encode_ordinary(self, text, ids):
        """Append the ids of ``text``, read with no special tokens, to the list ``ids``."""
        pieces = GPT2_SPLIT.findall(text)
        cache = self._cache
        new_pieces = list(set(pieces).difference(cache))  # each distinct piece not seen before, once
        merged = merge_pieces(
            [piece.encode("utf-8") for piece in new_pieces],
            self._byte_ids,
            self._pair_keys,
            self._pair_ranks,
            self._merged_id_of_rank,
            self.vocab_size,
        )
        cache.update(zip(new_pieces, merged))
        ids.extend(itertools.chain.from_iterable(map(cache.__getitem__, pieces)))

    def _special_set(self, tokens, name):
        """The special token strings that ``tokens`` ("all", or a collection of strings) names."""
        if tokens == "all":
            return set(self.special_tokens)
        if isinstance(tokens, str):
            raise TypeError(f"{name} must be 'all' or a collection of special token strings, got the str {tokens!r}")
        unknown = sorted(set(tokens) - set(self.special_tokens))
        if unknown:
            raise ValueError(
                f"{name} names {unknown[:_MAX_IN_ERROR]}, which are not special tokens of this tokenizer; "
                f"its special tokens are {sorted(self.special_tokens)[:_MAX_IN_ERROR]}"
            )
        return set(tokens)

    def __eq__(self, other):
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return self.vocab == other.vocab and self.merges == other.merges

    def __hash__(self):
        return hash((len(self.vocab), tuple(self.merges)))

    def __repr__(self):
        specials = sorted(self.special_tokens)
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={specials})"


def _check_vocab(vocab):
    """Raise ValueError unless ``vocab`` maps strings to the ids 0..len-1 and holds all 256 byte tokens."""
    for token, i in vocab.items():
        if not isinstance(token, str) or not isinstance(i, int) or isinstance(i, bool):
            raise ValueError(f"vocab must map token strings to int ids, got {token!r}: {i!r}")
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        seen, repeated = set(), None
        for i in ids:
            if i in seen:
                repeated = i
                break
            seen.add(i)
        detail = (
            f"id {repeated} is used twice"
            if repeated is not None
            else f"id {min(set(range(len(vocab))) - seen)} is missing"
        )
        raise ValueError(f"vocab ids must be the distinct integers 0..{len(vocab) - 1}, but {detail}")
    missing = [byte for byte in range(256) if BYTE_TO_CHAR[byte] not in vocab]
    if missing:
        shown = ", ".join(f"{BYTE_TO_CHAR[byte]!r} (byte {byte})" for byte in missing[:_MAX_IN_ERROR])
        raise ValueError(f"vocab lacks {len(missing)} of the 256 byte tokens a byte-level BPE needs: {shown}")


def _merge_problem(vocab, pair):
    """Why ``pair`` cannot be a merge of ``vocab``, as the end of a sentence, or None if it can."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)):
        return "is not a pair of two token strings"
    merged = pair[0] + pair[1]
    for token in (*pair, merged):
        if token not in vocab:
            return f"needs the token {token!r}, which is not in the vocabulary"
    if not _BYTE_LEVEL_CHARS.issuperset(merged):  # the characters of both halves
        return f"makes the token {merged!r}, which is not made of byte-level characters"
    return None


def _check_merge_order(merges):
    """Raise ValueError unless each merge joins bytes or tokens that lower-ranked merges made.

    Trained BPE files always have this order (a token exists before it is merged again);
    encoding relies on it.
    """
    made = set(CHAR_TO_BYTE)
    for rank, (left, right) in enumerate(merges):
        for token in (left, right):
            if token not in made:
                raise ValueError(
                    f"merge {rank} ({left!r}, {right!r}) uses the token {token!r} before any lower-ranked merge "
                    "makes it; merges must be listed in the order they were learned"
                )
        made.add(left + right)


def _write_atomically(path, text):
    """Write ``text`` to ``path`` through a temporary file beside it, so ``path`` is never half-written."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)

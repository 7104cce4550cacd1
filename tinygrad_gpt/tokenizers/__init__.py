"""Tokenizers: turn text into integer ids and back.

A language model never sees characters, only integers in ``[0, vocab_size)``. The
tokenizer is the fixed, invertible map between the two. Two tokenizers share one
interface: ``encode(text)`` gives a 1-D NumPy ``int64`` array, ``decode(ids)`` gives the
text back, ``vocab_size`` is the number of ids, ``eot_token`` is the end-of-text id (or
None), and ``to_dict()`` is a JSON description that a checkpoint stores and
:func:`tokenizer_from_dict` turns back into the same tokenizer.

- :class:`CharTokenizer` (``char.py``): one token per distinct character of the corpus.
- :class:`BPETokenizer` (``bpe.py``): GPT-2's byte-level byte-pair encoding, loaded from
  GPT-2 / Hugging Face vocabulary files or trained on a corpus (``bpe_train.py``).

Tokenizers know nothing about Tensors.
"""

from pathlib import Path

from .bpe import BPETokenizer
from .char import CharTokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "build_tokenizer", "tokenizer_from_dict"]

# The "type" a tokenizer's to_dict() writes, and the class that reads it back.
_TOKENIZER_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer}


def tokenizer_from_dict(d):
    """Rebuild any tokenizer from the description its ``to_dict`` wrote (as a checkpoint stores it)."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"tokenizer description must be a dict with a 'type' key, got {d!r:.80}")
    if d["type"] not in _TOKENIZER_TYPES:
        raise ValueError(f"unknown tokenizer type {d['type']!r}; known types are {sorted(_TOKENIZER_TYPES)}")
    return _TOKENIZER_TYPES[d["type"]].from_dict(d)


def build_tokenizer(kind, text, vocab_size=4096):
    """The tokenizer a training run names: ``"char"``, ``"bpe"`` or a directory of saved BPE files.

    ``"char"`` takes the characters of ``text``; ``"bpe"`` trains a byte-level BPE of
    ``vocab_size`` tokens (with ``<|endoftext|>``) on ``text``; a directory holding
    ``vocab.json`` and ``merges.txt`` (as :meth:`BPETokenizer.save` or Hugging Face write
    them) is loaded and ``text`` is not used.
    """
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    directory = Path(kind)
    if not (directory / "vocab.json").is_file() or not (directory / "merges.txt").is_file():
        raise FileNotFoundError(
            f"tokenizer must be 'char', 'bpe' or a directory holding vocab.json and merges.txt, got {kind!r}"
        )
    return BPETokenizer.from_files(directory / "vocab.json", directory / "merges.txt")

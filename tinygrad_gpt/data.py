"""Corpora and batches: where the training tokens come from.

Three sources of data, all producing NumPy ``int64`` arrays (this file knows nothing
about Tensors):

* **Text files** -- :func:`load_text` reads a UTF-8 file with clear errors, and
  :class:`TextDataset` encodes it and cuts random ``(x, y)`` windows for next-token
  prediction, as nanoGPT's ``get_batch`` does.
* **The built-in corpus** -- :func:`pystdlib_corpus` concatenates the running Python's
  standard-library source, so a first training run needs no download.
* **Synthetic tasks** -- :class:`AdderTask` and :class:`SorterTask`, in the spirit of
  minGPT's demos: small problems with one right answer, so a model can be scored by
  exact match rather than by a loss that is hard to interpret.

:class:`Batches` puts the three behind the one interface the training loop uses.

Batches are always drawn from a ``np.random.Generator`` that the caller passes in, so a
seeded run is reproducible and no global random state is touched.
"""

import difflib
import hashlib
import os
import sysconfig
from pathlib import Path

import numpy as np

from .tokenizers import CharTokenizer, build_tokenizer
from .validate import check_int

# Label for target positions that take no loss, matching ``cross_entropy(..., ignore_index=-1)``.
IGNORE_INDEX = -1


# ----------------------------------------------------------------------------
# Text files


def load_text(path):
    """Read the UTF-8 text file at ``path`` and return its contents as a ``str``.

    The text is returned exactly as stored (line endings are not translated), except
    that a leading UTF-8 byte-order mark is dropped: it is an encoding marker, not text.

    Raises ``FileNotFoundError`` if there is no such file, ``IsADirectoryError`` for a
    directory, and ``ValueError`` if the file is empty, holds NUL bytes (a binary file),
    or is not valid UTF-8 (for example Latin-1 text).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"text file {str(path)!r} is a directory, expected a UTF-8 text file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise OSError(f"text file {str(path)!r} cannot be read ({err.strerror})") from None
    # A NUL byte never occurs in real text but is everywhere in binary formats; checking
    # for it catches binaries that happen to be valid UTF-8 (e.g. mostly-zero files).
    if b"\x00" in raw:
        raise ValueError(f"text file {str(path)!r} contains NUL bytes, so it looks binary; expected UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"text file {str(path)!r} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            f"re-save it as UTF-8"
        ) from None
    if len(text) == 0:
        raise ValueError(f"text file {str(path)!r} is empty, expected some text to train on")
    return text


class TextDataset:
    """A text encoded to token ids, split into train and validation, served in batches.

    As in nanoGPT, the first ``1 - val_fraction`` of the tokens (90% by default) is the
    training split and the rest the validation split. Splitting by position rather than
    at random keeps the validation text unseen as a whole passage, so its loss measures
    generalization rather than memorized neighbours.

    ``tokenizer`` defaults to a :class:`CharTokenizer` built from ``text`` itself.
    """

    splits = ("train", "val")

    def __init__(self, text, tokenizer=None, val_fraction=0.1):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if len(text) == 0:
            raise ValueError("text must be non-empty to build a dataset from it, got the empty string")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
        self.tokenizer = CharTokenizer.from_text(text) if tokenizer is None else tokenizer
        ids = self.tokenizer.encode(text)  # (N,) int64
        n_train = int(len(ids) * (1.0 - val_fraction))
        self.train_ids = ids[:n_train]  # (N_train,)
        self.val_ids = ids[n_train:]  # (N_val,)

    @property
    def vocab_size(self):
        """Number of distinct tokens, the tokenizer's ``vocab_size``."""
        return self.tokenizer.vocab_size

    def ids(self, split):
        """The 1-D ``int64`` token ids of ``split`` (``"train"`` or ``"val"``)."""
        _check_split(split, self.splits)
        return self.train_ids if split == "train" else self.val_ids

    def get_batch(self, split, batch_size, block_size, rng):
        """Draw ``batch_size`` random windows of ``block_size`` tokens from ``split``.

        Returns ``(x, y)``, both ``(batch_size, block_size)`` ``int64``, where
        ``y[b, t] = x[b, t + 1]`` within the text: ``y`` holds the next token after each
        position of ``x``. Window starts are drawn uniformly from ``rng``, a
        ``np.random.Generator``, so the same seed gives the same batches.
        """
        data = self.ids(split)
        check_int("batch_size", batch_size, minimum=1)
        check_int("block_size", block_size, minimum=1)
        _check_rng(rng)
        # A window needs block_size inputs plus one more token for the last target.
        if len(data) < block_size + 1:
            raise ValueError(
                f"the {split!r} split has {len(data)} tokens, but block_size {block_size} needs at least "
                f"{block_size + 1}; use a longer text or a smaller block_size"
            )
        starts = rng.integers(0, len(data) - block_size, size=batch_size)  # (B,) last start leaves room for y
        offsets = starts[:, None] + np.arange(block_size)  # (B, T)
        x = data[offsets]  # (B, T)
        y = data[offsets + 1]  # (B, T)
        return x, y


# ----------------------------------------------------------------------------
# The built-in corpus


def pystdlib_corpus(max_bytes=2_000_000):
    """Python source text from the running interpreter's standard library.

    A training corpus that is always there: no download, no data file in the repo. It
    is the top-level ``*.py`` files of ``sysconfig.get_paths()["stdlib"]`` (not the
    packages in subdirectories such as ``asyncio/``), concatenated in sorted file-name
    order. A file that is not valid UTF-8 is skipped. The text stops once it reaches
    ``max_bytes`` bytes of UTF-8, cutting the last file short.

    The default cap of 2 MB is about twice Tiny Shakespeare: enough text for a baby GPT
    to learn Python's look (indentation, keywords, docstrings) without overfitting
    quickly, and small enough to read and encode in well under a second.

    The result is deterministic for a given Python version; different Python versions
    ship slightly different standard libraries and so give slightly different text.
    """
    check_int("max_bytes", max_bytes, minimum=1)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"), key=lambda p: p.name) if stdlib.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no standard-library source files (*.py) found in {str(stdlib)!r}")
    pieces, total = [], 0
    for file in files:
        try:
            source = file.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not source.endswith("\n"):
            source += "\n"  # so the next file starts on its own line
        encoded = source.encode("utf-8")
        if total + len(encoded) >= max_bytes:
            # Cut on a byte boundary, then drop a multi-byte character split by the cut.
            pieces.append(encoded[: max_bytes - total].decode("utf-8", "ignore"))
            break
        pieces.append(source)
        total += len(encoded)
    return "".join(pieces)


# ----------------------------------------------------------------------------
# Synthetic tasks


class _PromptAnswerTask:
    """Shared machinery of the synthetic tasks: problems with one right answer.

    Every problem is a token sequence ``prompt + answer``. The model reads
    ``x = seq[:-1]`` and is trained to predict ``y = seq[1:]``, but only the positions
    of ``y`` that hold answer tokens count: the others are ``IGNORE_INDEX`` (-1),
    because the prompt is random and cannot be predicted.

    The space of problems is small enough to enumerate, so each problem has an integer
    index in ``[0, num_problems)``. A permutation seeded by ``seed`` sends a
    ``test_fraction`` of them to the held-out ``"test"`` split and the rest to
    ``"train"``; the two never share a problem, so the test score measures whether the
    model learned the rule rather than memorized answers.

    Subclasses set ``prompt_length``, ``answer_length``, ``vocab_size`` and
    ``num_problems``, and define ``_problems_from_index`` and ``sequences``.
    """

    splits = ("train", "test")

    def _make_splits(self, test_fraction, seed):
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
        n_test = max(1, round(test_fraction * self.num_problems))
        if n_test >= self.num_problems:
            raise ValueError(
                f"test_fraction {test_fraction!r} leaves no training problems out of {self.num_problems}"
            )
        perm = np.random.default_rng(seed).permutation(self.num_problems)  # (P,)
        self._split_index = {"test": perm[:n_test], "train": perm[n_test:]}

    @property
    def block_size(self):
        """Length of ``x`` and ``y``: the whole sequence but its last token."""
        return self.prompt_length + self.answer_length - 1

    def problems(self, split):
        """All problems of ``split``, one per row, in the split's (seeded, shuffled) order."""
        _check_split(split, self.splits)
        return self._problems_from_index(self._split_index[split])

    def get_batch(self, split, batch_size, rng):
        """Draw ``batch_size`` problems of ``split`` (with replacement) from ``rng``.

        Returns ``(x, y)``, both ``(batch_size, block_size)`` ``int64``: ``x`` is each
        sequence without its last token, ``y`` without its first, and ``y`` is -1 at the
        positions that would predict a prompt token (no loss is taken there).
        """
        _check_split(split, self.splits)
        check_int("batch_size", batch_size, minimum=1)
        _check_rng(rng)
        index = rng.choice(self._split_index[split], size=batch_size)  # (B,)
        seq = self.sequences(self._problems_from_index(index))  # (B, P + A)
        x = np.ascontiguousarray(seq[:, :-1])  # (B, T)
        y = seq[:, 1:].copy()  # (B, T)
        # y[:, t] predicts seq[:, t + 1]; the first answer token is seq[:, P], at t = P - 1.
        y[:, : self.prompt_length - 1] = IGNORE_INDEX
        return x, y

    def score(self, generate_fn, split="test", batch_size=1000, max_problems=None):
        """Exact-match accuracy of ``generate_fn`` on the problems of ``split``.

        ``generate_fn(prompts) -> answers`` takes an ``(N, prompt_length)`` ``int64``
        array of prompts and returns the ``(N, answer_length)`` integer array of answer
        tokens it predicts (for a GPT: greedy decoding of ``answer_length`` new tokens).
        It is called on chunks of at most ``batch_size`` prompts. A problem counts as
        solved only when every answer token is right. ``max_problems`` scores just the
        first that many problems of the split, a random subset since the split is
        shuffled. Returns the fraction solved, a float in ``[0, 1]``.
        """
        _check_split(split, self.splits)
        check_int("batch_size", batch_size, minimum=1)
        index = self._split_index[split]
        if max_problems is not None:
            check_int("max_problems", max_problems, minimum=1)
            index = index[:max_problems]
        seq = self.sequences(self._problems_from_index(index))  # (N, P + A)
        solved = 0
        for start in range(0, len(seq), batch_size):
            chunk = seq[start : start + batch_size]  # (n, P + A)
            prompts = chunk[:, : self.prompt_length]  # (n, P)
            expected = chunk[:, self.prompt_length :]  # (n, A)
            # Pass a copy, so a callback that writes into its input cannot change `expected`.
            answers = np.asarray(generate_fn(prompts.copy()))  # (n, A)
            if not np.issubdtype(answers.dtype, np.integer):
                raise TypeError(f"generate_fn must return integer token ids, got an array of dtype {answers.dtype}")
            if answers.shape != expected.shape:
                raise ValueError(
                    f"generate_fn must return an array of shape {expected.shape} for prompts of shape "
                    f"{prompts.shape}, got shape {answers.shape}"
                )
            solved += int(np.all(answers == expected, axis=1).sum())
        return solved / len(seq)


class AdderTask(_PromptAnswerTask):
    """Add two ``n_digits``-digit numbers: minGPT's adder demo.

    A problem is a pair ``(a, b)`` with ``a, b`` in ``[0, 10**n_digits)``. The tokens are
    the digits 0-9, and a problem's sequence is

        digits of a (n_digits, zero-padded) + digits of b (n_digits)
        + digits of a + b (n_digits + 1), least significant digit FIRST.

    The sum is reversed because the model writes it left to right: the ones digit
    depends only on the ones digits of ``a`` and ``b``, and each later digit on the
    digits so far plus a carry already written, so every step is learnable. (In the
    usual order the first digit written would depend on all the carries at once.)

    For example, with ``n_digits=2``, 85 + 50 = 135 is ``8 5 5 0 5 3 1``.

    The ``10**(2 * n_digits)`` pairs are split by a permutation seeded by ``seed``;
    ``test_fraction`` of them are held out as the ``"test"`` split. ``n_digits`` is at
    most 3 so that every pair can be enumerated.
    """

    vocab_size = 10

    def __init__(self, n_digits=2, test_fraction=0.1, seed=1337):
        check_int("n_digits", n_digits, minimum=1)
        if n_digits > 3:
            raise ValueError(f"n_digits must be at most 3 (so all pairs can be enumerated), got {n_digits}")
        self.n_digits = n_digits
        self.prompt_length = 2 * n_digits
        self.answer_length = n_digits + 1
        self.num_problems = 10 ** (2 * n_digits)
        self._make_splits(test_fraction, seed)

    def _problems_from_index(self, index):
        # Index i = a * 10**n + b: written with 2n digits, it is the digits of a then of b.
        a, b = np.divmod(index.astype(np.int64), 10**self.n_digits)  # (N,), (N,)
        return np.stack([a, b], axis=1)  # (N, 2)

    def sequences(self, pairs):
        """Token sequences ``(N, 3 * n_digits + 1)`` of the ``(N, 2)`` int array of pairs ``(a, b)``."""
        pairs = _int_rows("pairs", pairs, width=2, high=10**self.n_digits)  # (N, 2)
        a, b = pairs[:, 0], pairs[:, 1]  # (N,), (N,)
        n = self.n_digits
        return np.concatenate(
            [
                _digits(a, n, least_significant_first=False),  # (N, n)
                _digits(b, n, least_significant_first=False),  # (N, n)
                _digits(a + b, n + 1, least_significant_first=True),  # (N, n + 1)
            ],
            axis=1,
        )  # (N, 3n + 1)

    def decode_answer(self, answers):
        """The integers written by answer tokens, ``(N, n_digits + 1)`` reversed digits -> ``(N,)``."""
        answers = np.asarray(answers)
        if answers.ndim != 2 or answers.shape[1] != self.answer_length:
            raise ValueError(f"answers must have shape (N, {self.answer_length}), got shape {answers.shape}")
        place_values = 10 ** np.arange(self.answer_length, dtype=np.int64)  # (A,) 1, 10, 100, ...
        return answers.astype(np.int64) @ place_values  # (N,)


class SorterTask(_PromptAnswerTask):
    """Sort a short sequence of small numbers: minGPT's sort demo.

    A problem is a sequence of ``length`` tokens in ``[0, num_values)``; its answer is
    the same tokens in ascending order, so a problem's sequence is ``input + sorted``
    (``2 * length`` tokens), e.g. ``2 0 1 1 0 2`` + ``0 0 1 1 2 2``.

    All ``num_values**length`` inputs (at most a million) are enumerated and split by a
    permutation seeded by ``seed``; ``test_fraction`` of them are the ``"test"`` split.
    """

    def __init__(self, length=6, num_values=3, test_fraction=0.1, seed=1337):
        check_int("length", length, minimum=1)
        check_int("num_values", num_values, minimum=1)
        if num_values < 2:
            raise ValueError(f"num_values must be at least 2 for sorting to mean anything, got {num_values}")
        if num_values**length > 1_000_000:
            raise ValueError(
                f"num_values**length must be at most 1_000_000 (so all inputs can be enumerated), "
                f"got {num_values}**{length} = {num_values**length}"
            )
        self.length = length
        self.num_values = num_values
        self.vocab_size = num_values
        self.prompt_length = length
        self.answer_length = length
        self.num_problems = num_values**length
        self._make_splits(test_fraction, seed)

    def _problems_from_index(self, index):
        # Index i is the input whose base-num_values digits are its tokens, first token most significant.
        return _digits(index.astype(np.int64), self.length, least_significant_first=False, base=self.num_values)

    def sequences(self, inputs):
        """Token sequences ``(N, 2 * length)`` (input, then sorted) of the ``(N, length)`` int array of inputs."""
        inputs = _int_rows("inputs", inputs, width=self.length, high=self.num_values)  # (N, length)
        return np.concatenate([inputs, np.sort(inputs, axis=1)], axis=1)  # (N, 2 * length)


def _int_rows(name, rows, width, high):
    """Check that ``rows`` is an ``(N, width)`` integer array with entries in ``[0, high)``; return it as int64."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != width or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"{name} must be an (N, {width}) integer array, got shape {rows.shape} and dtype {rows.dtype}")
    if rows.size > 0 and (rows.min() < 0 or rows.max() >= high):
        raise ValueError(f"{name} must hold integers in [0, {high}), got values from {rows.min()} to {rows.max()}")
    return rows.astype(np.int64)


def _digits(values, width, least_significant_first, base=10):
    """Base-``base`` digits of non-negative integers ``values`` (N,), zero-padded to ``width`` -> (N, width)."""
    powers = base ** np.arange(width, dtype=np.int64)  # (width,) 1, base, base**2, ...
    if not least_significant_first:
        powers = powers[::-1]
    return (values[:, None] // powers) % base  # (N, width) int64


# ----------------------------------------------------------------------------
# One interface for the training loop

BUILT_IN = ("pystdlib", "adder", "sorter")


class Batches:
    """The batches of a run: a text file, the built-in corpus, or a synthetic task.

    ``data`` is the path of a UTF-8 text file or one of :data:`BUILT_IN`. What the
    training loop uses, and all that another source of batches must offer:

    * ``get(split, rng) -> (x, y)``, two ``(batch_size, block_size)`` ``int64`` arrays;
    * ``splits``: the names of the splits, training first, the one that picks the best
      checkpoint last (``("train", "val")`` for text, ``("train", "test")`` for a task);
    * ``vocab_size`` and ``block_size``;
    * ``tokenizer``: saved in checkpoints (``None`` for a task, whose tokens are digits).

    A text also has ``source`` (its absolute path, or ``"pystdlib"``) and ``text_sha256``,
    by which a resumed run recognises its text under any path: given ``text_sha256``
    (a resumed run's), another text is refused. ``tokenizer`` is the one to encode the
    text with (a resumed run's); without one, ``build_tokenizer(tokenizer_kind, text,
    vocab_size)`` makes it: ``"char"`` (the default), ``"bpe"`` (trained on the text), or
    a directory of saved BPE files.
    """

    def __init__(self, data, batch_size, block_size, tokenizer=None, text_sha256=None, tokenizer_kind="char",
                 vocab_size=4096):
        check_int("batch_size", batch_size, minimum=1)
        check_int("block_size", block_size, minimum=1)
        self.batch_size = batch_size
        self.task_name = data if data in ("adder", "sorter") else None
        self.text_sha256 = None
        if self.task_name:
            if tokenizer_kind != "char":
                raise ValueError(
                    f"--tokenizer {tokenizer_kind} is for text data; the {data} task has its own digit tokens"
                )
            self.task = AdderTask() if data == "adder" else SorterTask()
            self.tokenizer = None
            self.splits = self.task.splits
            self.vocab_size, self.block_size = self.task.vocab_size, self.task.block_size
            self.source = data
            return
        self.task = None
        self.source = data if data == "pystdlib" else os.path.abspath(data)
        text = pystdlib_corpus() if data == "pystdlib" else _load_text_or_hint(data)
        self.text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if text_sha256 is not None and self.text_sha256 != text_sha256:
            raise ValueError(
                f"the text of {data} is not the text this run was trained on (its SHA-256 is "
                f"{self.text_sha256[:12]}..., the run's {text_sha256[:12]}...); give --data the path of that text"
            )
        if tokenizer is None:
            tokenizer = build_tokenizer(tokenizer_kind, text, vocab_size)
        self.dataset = TextDataset(text, tokenizer)
        self.tokenizer = self.dataset.tokenizer
        self.splits, self.vocab_size = self.dataset.splits, self.dataset.vocab_size
        self.block_size = block_size
        for split in self.splits:  # fail now, not at the first batch
            n = len(self.dataset.ids(split))
            if n < block_size + 1:
                raise ValueError(
                    f"the {split} split of {data} has {n} tokens, fewer than block_size + 1 = "
                    f"{block_size + 1}; use more text or a smaller --block_size"
                )

    def get(self, split, rng):
        if self.task is not None:
            return self.task.get_batch(split, self.batch_size, rng)
        return self.dataset.get_batch(split, self.batch_size, self.block_size, rng)


def _load_text_or_hint(path):
    """load_text, but a missing file whose name is close to a built-in one suggests it."""
    try:
        return load_text(path)
    except FileNotFoundError as error:
        close = difflib.get_close_matches(os.path.basename(path), BUILT_IN, n=1, cutoff=0.75)
        if close:
            raise FileNotFoundError(f"{error}; did you mean the built-in {close[0]!r}?") from None
        raise


# ----------------------------------------------------------------------------
# Argument checks shared by the datasets


def _check_split(split, splits):
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(map(repr, splits))}, got {split!r}")


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(rng).__name__}"
        )

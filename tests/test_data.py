"""Tests for tinygrad_gpt/data.py: text files, batches, the built-in corpus, synthetic tasks."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_gpt.data import AdderTask, SorterTask, TextDataset, load_text, pystdlib_corpus
from tinygrad_gpt.tokenizers import CharTokenizer

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")


def counting_text(n):
    """A text of n distinct characters in sorted order, so its token ids are exactly 0..n-1.

    With it, a batch row shows where in the text it was cut from: x[b] = arange(s, s + T).
    """
    return "".join(chr(0x4E00 + i) for i in range(n))


# ----------------------------------------------------------------------------
# load_text


def test_load_text_reads_utf8_exactly(tmp_path):
    text = "Première ligne\r\nzweite Zeile 😀\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    assert load_text(path) == text  # \r\n kept: no newline translation
    assert load_text(str(path)) == text


def test_load_text_drops_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert load_text(path) == "hello"


def test_load_text_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt.*does not exist"):
        load_text(path)


def test_load_text_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_text(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["empty", "only-bom"])
def test_load_text_empty_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        load_text(path)


def test_load_text_binary_file_with_nul_bytes(tmp_path):
    # Valid UTF-8 (all ASCII) but with NUL bytes, as in most binary formats.
    path = tmp_path / "data.bin"
    path.write_bytes(b"PK\x03\x04\x00\x00abc")
    with pytest.raises(ValueError, match="data.bin.*NUL bytes"):
        load_text(path)


def test_load_text_latin1_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt.*not valid UTF-8 \(byte 0xe9 at offset 3\)"):
        load_text(path)


# ----------------------------------------------------------------------------
# TextDataset


def test_split_is_first_90_percent_then_last_10_percent():
    text = counting_text(1000)
    ds = TextDataset(text)
    assert ds.vocab_size == 1000
    np.testing.assert_array_equal(ds.train_ids, np.arange(900))
    np.testing.assert_array_equal(ds.val_ids, np.arange(900, 1000))
    assert ds.ids("train") is ds.train_ids and ds.ids("val") is ds.val_ids


def test_dataset_uses_given_tokenizer():
    tok = CharTokenizer("cba")  # ids in reverse alphabetical order
    ds = TextDataset("abcabcabca", tokenizer=tok)
    assert ds.tokenizer is tok
    assert ds.train_ids.tolist() == [2, 1, 0, 2, 1, 0, 2, 1, 0]
    with pytest.raises(ValueError, match="'d'"):
        TextDataset("abcd", tokenizer=tok)


@settings(deadline=None, max_examples=25)
@given(
    batch_size=st.integers(1, 8),
    block_size=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    split=st.sampled_from(["train", "val"]),
)
def test_get_batch_windows_come_from_the_split_and_y_is_x_shifted(batch_size, block_size, seed, split):
    ds = TextDataset(counting_text(300))  # train ids 0..269, val ids 270..299
    data = ds.ids(split)
    x, y = ds.get_batch(split, batch_size, block_size, np.random.default_rng(seed))
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == np.int64
    # ids equal positions in the text, so each row must be a run of consecutive ids
    # inside the split, and y the same run moved on by one.
    starts = x[:, :1]  # (B, 1)
    np.testing.assert_array_equal(x, starts + np.arange(block_size))
    np.testing.assert_array_equal(y, x + 1)
    assert starts.min() >= data[0] and y.max() <= data[-1]


def test_get_batch_reaches_both_ends_of_the_split():
    # A split of block_size + 2 tokens has exactly two windows, starts 0 and 1. Missing
    # either would be an off-by-one; 200 draws miss one with probability 2 * 2**-200.
    ds = TextDataset(counting_text(60))  # train is 54 tokens
    x, _ = ds.get_batch("train", 200, 52, np.random.default_rng(0))
    assert set(x[:, 0].tolist()) == {0, 1}


def test_get_batch_is_reproducible_with_the_same_seed():
    ds = TextDataset(counting_text(500))
    x1, y1 = ds.get_batch("train", 4, 16, np.random.default_rng(42))
    x2, y2 = ds.get_batch("train", 4, 16, np.random.default_rng(42))
    x3, _ = ds.get_batch("train", 4, 16, np.random.default_rng(43))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_get_batch_split_too_short():
    ds = TextDataset(counting_text(100))  # val split is 10 tokens
    with pytest.raises(ValueError, match=r"'val' split has 10 tokens, but block_size 10 needs at least 11"):
        ds.get_batch("val", 2, 10, np.random.default_rng(0))
    x, _ = ds.get_batch("val", 2, 9, np.random.default_rng(0))  # 10 tokens are enough for T = 9
    assert x.shape == (2, 9)


def test_get_batch_rejects_bad_arguments():
    ds = TextDataset(counting_text(100))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', got 'test'"):
        ds.get_batch("test", 2, 4, rng)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        ds.get_batch("train", 0, 4, rng)
    with pytest.raises(TypeError, match="block_size must be an integer >= 1, got 4.0"):
        ds.get_batch("train", 2, 4.0, rng)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        ds.get_batch("train", 2, 4, 0)


def test_dataset_rejects_empty_text_and_bad_fraction():
    with pytest.raises(ValueError, match="non-empty"):
        TextDataset("")
    with pytest.raises(ValueError, match="val_fraction"):
        TextDataset("abc", val_fraction=1.0)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"Tiny Shakespeare not found at {SHAKESPEARE}")
def test_tiny_shakespeare_dataset():
    text = load_text(SHAKESPEARE)
    ds = TextDataset(text)
    assert ds.vocab_size == 65  # the character set nanoGPT reports for this corpus
    assert len(ds.train_ids) + len(ds.val_ids) == len(text)
    assert ds.tokenizer.decode(ds.val_ids) == text[len(ds.train_ids) :]


# ----------------------------------------------------------------------------
# pystdlib_corpus


def test_pystdlib_corpus_is_deterministic_capped_python_source():
    text = pystdlib_corpus()
    assert text == pystdlib_corpus()
    assert 1_000_000 < len(text.encode("utf-8")) <= 2_000_000  # the stdlib holds well over 2 MB of source
    assert "def " in text and "import " in text


def test_pystdlib_corpus_small_cap_is_a_prefix_of_the_larger_one():
    small, large = pystdlib_corpus(max_bytes=1000), pystdlib_corpus(max_bytes=5000)
    # The cut may drop at most 3 bytes of a multi-byte UTF-8 character split by the cap.
    assert 997 <= len(small.encode("utf-8")) <= 1000
    assert large.startswith(small)


def test_pystdlib_corpus_starts_with_the_first_file_in_sorted_order():
    import sysconfig

    first = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"), key=lambda p: p.name)[0]
    assert pystdlib_corpus(max_bytes=10_000_000).startswith(first.read_text(encoding="utf-8")[:500])


def test_pystdlib_corpus_rejects_bad_cap():
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 1"):
        pystdlib_corpus(max_bytes=0)


# ----------------------------------------------------------------------------
# AdderTask


def digits_to_int(digits):
    """Most-significant-first digit list -> int, written independently of data.py."""
    return int("".join(str(d) for d in digits))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_adder_batches_are_correct_reversed_sums(n):
    task = AdderTask(n_digits=n)
    assert task.block_size == 3 * n and task.vocab_size == 10
    x, y = task.get_batch("train", 300, np.random.default_rng(n))
    assert x.shape == y.shape == (300, 3 * n) and x.dtype == y.dtype == np.int64
    for xb, yb in zip(x, y):
        seq = list(xb) + [yb[-1]]  # the full sequence: x plus the last target
        a, b = digits_to_int(seq[:n]), digits_to_int(seq[n : 2 * n])
        answer = seq[2 * n :]
        assert len(answer) == n + 1
        assert digits_to_int(answer[::-1]) == a + b  # answer is written least significant digit first
        # y masks the 2n - 1 positions that predict a digit of a or b, then is x shifted by one.
        assert list(yb[: 2 * n - 1]) == [-1] * (2 * n - 1)
        assert list(yb[2 * n - 1 :]) == seq[2 * n :]
    assert x.min() >= 0 and x.max() <= 9


def test_adder_sequence_example_from_docstring():
    task = AdderTask(n_digits=2)
    # 85 + 50 = 135: prompt 8 5 | 5 0, answer reversed 5 3 1. 7 + 3 = 10: zero-padded 0 7 | 0 3, answer 0 1 0.
    assert task.sequences([[85, 50], [7, 3]]).tolist() == [[8, 5, 5, 0, 5, 3, 1], [0, 7, 0, 3, 0, 1, 0]]
    assert task.decode_answer([[5, 3, 1], [0, 1, 0]]).tolist() == [135, 10]


def test_adder_splits_are_disjoint_cover_all_pairs_and_are_seeded():
    task = AdderTask(n_digits=2, test_fraction=0.1, seed=7)
    train = {tuple(p) for p in task.problems("train").tolist()}
    test = {tuple(p) for p in task.problems("test").tolist()}
    assert len(test) == 1000 and len(train) == 9000
    assert not train & test
    assert train | test == {(a, b) for a in range(100) for b in range(100)}
    assert np.array_equal(AdderTask(seed=7).problems("test"), task.problems("test"))
    assert not np.array_equal(AdderTask(seed=8).problems("test"), task.problems("test"))


def test_adder_batches_draw_only_from_their_split():
    task = AdderTask(n_digits=1, test_fraction=0.2)
    test = {tuple(p) for p in task.problems("test").tolist()}
    for split, inside in (("test", True), ("train", False)):
        x, _ = task.get_batch(split, 200, np.random.default_rng(0))
        pairs = {(int(r[0]), int(r[1])) for r in x}
        assert all((p in test) == inside for p in pairs)


def test_adder_get_batch_is_reproducible():
    task = AdderTask()
    x1, y1 = task.get_batch("train", 8, np.random.default_rng(3))
    x2, y2 = task.get_batch("train", 8, np.random.default_rng(3))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def adder_oracle(n):
    """A perfect generate_fn for n-digit addition, computed from the prompt digits."""

    def generate(prompts):
        assert prompts.dtype == np.int64 and prompts.shape[1] == 2 * n
        out = []
        for row in prompts.tolist():
            total = digits_to_int(row[:n]) + digits_to_int(row[n:])
            out.append([int(c) for c in reversed(str(total).zfill(n + 1))])
        return np.array(out, dtype=np.int64)

    return generate


def test_adder_score_of_perfect_and_wrong_oracles():
    task = AdderTask(n_digits=2)
    oracle = adder_oracle(2)
    assert task.score(oracle) == 1.0
    assert task.score(oracle, split="train", max_problems=500) == 1.0

    def wrong_when_a_is_even(prompts):
        answers = oracle(prompts)
        a_even = (prompts[:, 1] % 2) == 0  # the ones digit of a
        answers[a_even, 0] = (answers[a_even, 0] + 1) % 10
        return answers

    a = task.problems("test")[:, 0]
    assert task.score(wrong_when_a_is_even) == pytest.approx(np.mean(a % 2 == 1), abs=1e-12)
    assert task.score(wrong_when_a_is_even) < 1.0


def test_adder_score_feeds_chunks_of_at_most_batch_size():
    task = AdderTask(n_digits=1, test_fraction=0.3)  # 30 test problems
    sizes = []

    def recording(prompts):
        sizes.append(len(prompts))
        return adder_oracle(1)(prompts)

    assert task.score(recording, batch_size=7) == 1.0
    assert sizes == [7, 7, 7, 7, 2]


def test_adder_score_rejects_wrong_answer_shape():
    task = AdderTask(n_digits=2)
    with pytest.raises(ValueError, match=r"shape \(1000, 3\).*got shape \(1000, 2\)"):
        task.score(lambda prompts: np.zeros((len(prompts), 2), dtype=np.int64))


def test_adder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_digits must be at most 3"):
        AdderTask(n_digits=4)
    with pytest.raises(ValueError, match="test_fraction"):
        AdderTask(test_fraction=0.0)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test', got 'val'"):
        AdderTask().problems("val")
    with pytest.raises(ValueError, match=r"integers in \[0, 100\)"):
        AdderTask().sequences([[100, 1]])


# ----------------------------------------------------------------------------
# SorterTask


def test_sorter_batches_sort_the_prompt():
    task = SorterTask(length=6, num_values=3)
    assert task.block_size == 11 and task.vocab_size == 3
    x, y = task.get_batch("train", 300, np.random.default_rng(0))
    assert x.shape == y.shape == (300, 11) and x.dtype == y.dtype == np.int64
    for xb, yb in zip(x, y):
        seq = list(xb) + [yb[-1]]
        assert seq[6:] == sorted(seq[:6])
        assert list(yb[:5]) == [-1] * 5  # no loss on predicting the random input
        assert list(yb[5:]) == seq[6:]
    assert x.min() >= 0 and x.max() <= 2


def test_sorter_splits_are_disjoint_and_cover_all_inputs():
    task = SorterTask(length=4, num_values=3, test_fraction=0.25)
    train = {tuple(p) for p in task.problems("train").tolist()}
    test = {tuple(p) for p in task.problems("test").tolist()}
    assert len(train) + len(test) == 81 and len(test) == 20  # round(0.25 * 81)
    assert not train & test
    assert all(len(p) == 4 and set(p) <= {0, 1, 2} for p in train | test)


def test_sorter_score_of_perfect_and_wrong_oracles():
    task = SorterTask()
    assert task.score(lambda prompts: np.sort(prompts, axis=1)) == 1.0
    # Sorting descending is right exactly for inputs whose values are all equal.
    inputs = task.problems("test")
    all_equal = np.mean(np.all(inputs == inputs[:, :1], axis=1))
    descending = task.score(lambda prompts: np.sort(prompts, axis=1)[:, ::-1])
    assert descending == pytest.approx(all_equal, abs=1e-12)
    assert descending < 1.0


def test_sorter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at most 1_000_000"):
        SorterTask(length=13, num_values=3)
    with pytest.raises(ValueError, match="num_values must be at least 2"):
        SorterTask(num_values=1)
    with pytest.raises(TypeError, match="integer token ids"):
        SorterTask().score(lambda prompts: np.sort(prompts, axis=1).astype(float))

"""BPE tokenizer benchmark: our BPETokenizer (Python, with a Numba merge loop) against the Rust libraries, same run.

    python benchmarks/bench_tokenizer.py              # 5 encoding rounds, 3 training rounds
    python benchmarks/bench_tokenizer.py --rounds 3   # fewer of each

Encoding: Tiny Shakespeare with GPT-2's real vocabulary (../shared/data/gpt2), ours on a
fresh tokenizer each round (so its cache of merged pieces starts empty and every distinct
piece is merged once, as on a new corpus) against tiktoken's ``encode``. Loading the
vocabulary is timed apart. Training: a 4,096-token byte-level vocabulary on Tiny
Shakespeare, ours (``BPETokenizer.train``) against Hugging Face ``tokenizers``'
``BpeTrainer`` on the same pre-tokenization. Rounds alternate (ours, theirs, ours, ...)
so that a busy machine slows both alike; the medians and their ratio are reported, with
a check that both sides produced the same tokens or merges.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tinygrad_gpt.tokenizers import BPETokenizer  # noqa: E402
from tinygrad_gpt.tokenizers.bytelevel import GPT2_SPLIT_PATTERN  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)


def find_shared_data():
    """``shared/data`` beside the repository or beside a folder above it (a worktree sits deeper)."""
    return next((folder / "shared" / "data" for folder in REPO.parents if (folder / "shared" / "data").is_dir()), None)


def version_of(module_name):
    try:
        return __import__(module_name).__version__
    except ImportError:
        return "not installed"


def timed(function):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_encoding(text, encoder_json, vocab_bpe, rounds):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    megabytes = len(text.encode("utf-8")) / 1e6
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    theirs = tiktoken.Encoding(
        "gpt2", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )
    # The first call in a process loads the compiled merge kernel from Numba's cache
    # (or compiles it): a cost per process, not per tokenizer, reported apart.
    first = BPETokenizer.from_files(encoder_json, vocab_bpe)
    first_time, _ = timed(lambda: first.encode(text))
    load_times, our_times, warm_times, their_times = [], [], [], []
    for _ in range(rounds):
        load_time, ours = timed(lambda: BPETokenizer.from_files(encoder_json, vocab_bpe))
        our_time, our_ids = timed(lambda: ours.encode(text))
        warm_time, _ = timed(lambda: ours.encode(text))  # the same tokenizer again: every piece cached
        their_time, their_ids = timed(lambda: theirs.encode(text))
        load_times.append(load_time)
        our_times.append(our_time)
        warm_times.append(warm_time)
        their_times.append(their_time)
    same = np.array_equal(our_ids, np.array(their_ids, dtype=np.int64))
    ours_mbs, warm_mbs = megabytes / statistics.median(our_times), megabytes / statistics.median(warm_times)
    theirs_mbs = megabytes / statistics.median(their_times)
    print(
        f"\nEncoding Tiny Shakespeare ({megabytes:.2f} MB, {len(our_ids):,} tokens) with GPT-2's vocabulary, "
        f"median of {rounds} alternating rounds:"
    )
    print(f"  ours, fresh tokenizer (empty cache) {ours_mbs:6.2f} MB/s")
    print(f"  ours, same tokenizer again (cached) {warm_mbs:6.2f} MB/s")
    print(f"  tiktoken (Rust)                     {theirs_mbs:6.2f} MB/s")
    print(f"  ratio ours / tiktoken, fresh        {ours_mbs / theirs_mbs:6.2f}   (target >= 0.33)")
    print(
        f"  identical token ids: {'yes' if same else 'NO'}; loading GPT-2's files takes us "
        f"{statistics.median(load_times):.2f} s (not in the encoding time)"
    )
    print(f"  first encoding in this process, with Numba's kernel load: {first_time:.2f} s (not in the rounds)")


def hugging_face_merges(tokenizer):
    """The learned merges of a ``tokenizers`` BPE model as (left, right) pairs, across its JSON formats."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in merges]


def bench_training(text, vocab_size, rounds):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    def train_theirs():
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<|endoftext|>"],
            show_progress=False,
        )
        tokenizer.train_from_iterator([text], trainer)
        return tokenizer

    our_times, their_times = [], []
    for _ in range(rounds):
        our_time, ours = timed(lambda: BPETokenizer.train(text, vocab_size))
        their_time, theirs = timed(train_theirs)
        our_times.append(our_time)
        their_times.append(their_time)
    ours_s, theirs_s = statistics.median(our_times), statistics.median(their_times)
    their_merges = hugging_face_merges(theirs)
    # Both take a most frequent pair; only the tie-breaking rule differs, which can reorder merges.
    first_difference = next((r for r, (a, b) in enumerate(zip(ours.merges, their_merges)) if a != b), None)
    print(f"\nTraining a {vocab_size:,}-token vocabulary on Tiny Shakespeare, median of {rounds} alternating rounds:")
    print(f"  ours (pure Python)              {ours_s:6.2f} s")
    print(f"  Hugging Face tokenizers (Rust)   {theirs_s:6.2f} s   (its trainer may use every core)")
    print(f"  ratio ours / Hugging Face        {ours_s / theirs_s:6.2f}   (target <= 5)")
    print(
        f"  same set of merges: {'yes' if set(ours.merges) == set(their_merges) else 'NO'} "
        f"({len(ours.merges):,} ours, {len(their_merges):,} theirs); same order: "
        + ("yes" if first_difference is None else f"up to merge {first_difference} (ties are broken differently)")
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="encoding rounds (training runs min(rounds, 3))")
    parser.add_argument("--vocab_size", type=int, default=4096, help="size of the trained vocabulary")
    args = parser.parse_args()
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    print(
        "versions: " + ", ".join(f"{name} {version_of(name)}" for name in ("numpy", "regex", "tiktoken", "tokenizers"))
    )
    data = find_shared_data()
    if data is None or not (data / "tinyshakespeare.txt").is_file():
        sys.exit("bench_tokenizer: needs ../shared/data/tinyshakespeare.txt, which is not on this machine")
    text = (data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    encoder_json, vocab_bpe = data / "gpt2" / "encoder.json", data / "gpt2" / "vocab.bpe"
    if not (encoder_json.is_file() and vocab_bpe.is_file()):
        print("\nEncoding skipped: GPT-2's vocabulary files (../shared/data/gpt2) are not on this machine")
    elif version_of("tiktoken") == "not installed":
        print("\nEncoding skipped: tiktoken is not installed")
    else:
        bench_encoding(text, encoder_json, vocab_bpe, args.rounds)
    if version_of("tokenizers") == "not installed":
        print("\nTraining skipped: Hugging Face tokenizers is not installed")
    else:
        bench_training(text, args.vocab_size, min(args.rounds, 3))


if __name__ == "__main__":
    main()

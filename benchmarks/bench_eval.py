"""How much the shared-context KV cache saves when scoring multiple-choice questions.

    python benchmarks/bench_eval.py [--rounds 5] [--questions 20]

A question is a context of CONTEXT tokens and 4 choices of 6 to 16 tokens (random
ids: the speed does not depend on what the tokens say). The baseline scores each choice
from scratch: one forward over context + choice per choice, as a harness without a
cache does. The cached path (tinygrad_gpt.evaluate) runs the context once and the 4
choices as one batch after its copied keys and values. A second baseline batches the
4 from-scratch windows into one forward, for a fuller picture. Rounds alternate the
three methods so that a shared, noisy machine slows them alike; medians are reported,
as ratios to the per-choice baseline measured in the same round.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygrad_gpt import manual_seed  # noqa: E402
from tinygrad_gpt.evaluate import Evaluator  # noqa: E402
from tinygrad_gpt.gpt import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.tensor import no_grad  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

CONFIGS = {
    # name: (model config, context tokens)
    "baby (tinygpt train default)": (GPTConfig(block_size=64, vocab_size=101, n_layer=4, n_head=4, n_embd=128,
                                               bias=False), 44),
    "gpt2-mini (block 256)": (GPTConfig(block_size=256, vocab_size=512, n_layer=4, n_head=4, n_embd=256,
                                        bias=True), 200),
}
N_CHOICES = 4


class IdTokenizer:
    """Token ids written as space-separated numbers: the benchmark chooses ids, not text."""

    eot_token = None

    def encode(self, text):
        return np.array([int(t) for t in text.split()], dtype=np.int64)


def questions(config, context_tokens, n, generator):
    out = []
    for _ in range(n):
        context = " ".join(map(str, generator.integers(config.vocab_size, size=context_tokens)))
        choices = [" " + " ".join(map(str, generator.integers(config.vocab_size, size=generator.integers(6, 17))))
                   for _ in range(N_CHOICES)]
        out.append((context, choices))
    return out


def batched_from_scratch(evaluator, context, choices):
    """All choices' windows right-padded into one forward (no cache)."""
    pairs = [evaluator.encode_pair(context, c) for c in choices]
    windows = [np.concatenate([ctx, cont]) for ctx, cont in pairs]
    longest = max(len(w) for w in windows)
    batch = np.zeros((len(windows), longest - 1), dtype=np.int64)  # (N, T)
    for row, w in enumerate(windows):
        batch[row, : len(w) - 1] = w[:-1]
    with no_grad():
        return evaluator._all_logits(batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    print(f"{args.questions} questions of {N_CHOICES} choices (6-16 tokens each) per round, {args.rounds} rounds, "
          f"float32\n")
    print("| model | context | per choice from scratch (ms/question) | batched from scratch | cached context | "
          "cached speed-up vs per choice | vs batched |")
    print("|---|---|---|---|---|---|---|")
    for name, (config, context_tokens) in CONFIGS.items():
        manual_seed(0)
        evaluator = Evaluator(GPT(config), IdTokenizer())
        qs = questions(config, context_tokens, args.questions, np.random.default_rng(0))
        methods = {
            "scratch": lambda q: evaluator.loglikelihood_choices([q[0]] * N_CHOICES, q[1], use_cache=False),
            "batched": lambda q: batched_from_scratch(evaluator, *q),
            "cached": lambda q: evaluator.loglikelihood_choices([q[0]] * N_CHOICES, q[1], use_cache=True),
        }
        for method in methods.values():  # warm-up: Numba compiles on first use
            method(qs[0])
        times = {m: [] for m in methods}
        for _ in range(args.rounds):
            for m, method in methods.items():
                start = time.perf_counter()
                for q in qs:
                    method(q)
                times[m].append((time.perf_counter() - start) / len(qs))
        ratio = statistics.median(s / c for s, c in zip(times["scratch"], times["cached"]))
        ratio_batched = statistics.median(b / c for b, c in zip(times["batched"], times["cached"]))
        ms = {m: statistics.median(t) * 1e3 for m, t in times.items()}
        print(f"| {name} | {context_tokens} | {ms['scratch']:.1f} | {ms['batched']:.1f} | {ms['cached']:.1f} | "
              f"**{ratio:.2f}x** | {ratio_batched:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

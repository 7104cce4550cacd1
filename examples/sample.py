"""Load a checkpoint and write text with it.

    python examples/sample.py out-shakespeare-char/ckpt_best.npz --prompt "ROMEO:" --tokens 300

The checkpoint carries its model config and tokenizer, so nothing else is
needed. Sampling uses the KV cache; --temperature, --top_k and --top_p shape
the distribution, --seed makes it repeatable.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt.tokenizers import CharTokenizer  # noqa: E402
from tinygrad_gpt.train import load_model  # noqa: E402


def main():
    tinygrad_gpt.tune_process()  # the process-wide settings for speed, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a checkpoint written by training (ckpt_best.npz or ckpt_last.npz)")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()

    model, metadata, _ = load_model(args.ckpt)
    if not metadata.get("tokenizer"):
        sys.exit("this checkpoint was trained on a synthetic task; see examples/adder.py")
    tokenizer = CharTokenizer.from_dict(metadata["tokenizer"])
    prompt = tokenizer.encode(args.prompt)[None, :]  # (1, T)
    out = model.generate(prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, generator=np.random.default_rng(args.seed))
    print(tokenizer.decode(out[0]))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, OSError) as error:  # bad input: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

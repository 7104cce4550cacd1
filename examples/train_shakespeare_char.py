"""Train nanoGPT's CPU "baby GPT" on Tiny Shakespeare, character by character.

    python examples/train_shakespeare_char.py path/to/tinyshakespeare.txt

The config is nanoGPT's CPU example (4 layers, 4 heads, 128-dim embeddings,
block 64, batch 12, 2000 iterations, lr 1e-3 cosine-decayed to 1e-4 after 100
warm-up steps, beta2 0.99, weight decay 0.1, grad clip 1.0, no bias, no
dropout), so the val loss it reaches can be put beside nanoGPT's own (1.886
with PyTorch on the same 2-core machine, in 253 s). Checkpoints, history.csv
and (with matplotlib) loss_curve.png go to --out_dir; add --resume to continue.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt.train import TrainConfig, train  # noqa: E402

BABY_GPT = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, bias=False,
    max_iters=2000, lr_decay_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
    beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
    eval_interval=250, eval_iters=20, log_interval=10,
)


def main():
    tinygrad_gpt.tune_process()  # the process-wide settings for speed, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="path to tinyshakespeare.txt (1,115,394 characters)")
    parser.add_argument("--out_dir", default="out-shakespeare-char")
    parser.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out_dir")
    parser.add_argument("--max_iters", type=int, default=BABY_GPT["max_iters"], help="(for a quick try)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    config = TrainConfig(**{**BABY_GPT, "max_iters": args.max_iters}, data=args.data, out_dir=args.out_dir)
    start = time.perf_counter()
    result = train(config, resume=args.resume, explicit=("data", "out_dir", "max_iters"), overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    val = result["losses"].get("val")
    print(f"\nval loss {val:.4f} at iteration {result['iter_num']}, wall time {elapsed:.0f} s "
          f"(median step {result['median_step_ms']:.1f} ms)")

    model, tokenizer = result["model"], result["batches"].tokenizer
    start_ids = tokenizer.encode("\n")[None, :]
    text = tokenizer.decode(model.generate(start_ids, 500, temperature=0.8, top_k=200)[0])
    print("\n--- sample ---" + text)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, OSError) as error:  # bad input: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

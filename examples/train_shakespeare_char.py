"""Train nanoGPT's CPU "baby GPT" on Tiny Shakespeare, character by character.

    python examples/train_shakespeare_char.py path/to/tinyshakespeare.txt
    python examples/train_shakespeare_char.py --resume    # continue after Ctrl-C

The config is nanoGPT's CPU example (4 layers, 4 heads, 128-dim embeddings,
block 64, batch 12, 2000 iterations, lr 1e-3 cosine-decayed to 1e-4 after 100
warm-up steps, beta2 0.99, weight decay 0.1, grad clip 1.0, no bias, no
dropout), so the val loss it reaches can be put beside nanoGPT's own: val
1.886 in 253 s, measured on the 2-core machine of the README's Results section
(issue #4). Checkpoints, history.csv and (with matplotlib) loss_curve.png go
to --out_dir.
"""

import argparse
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt.cli import exit_status  # noqa: E402
from tinygrad_gpt.progress import Progress, StopSignals  # noqa: E402
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
    parser.add_argument("data", nargs="?",
                        help="path to tinyshakespeare.txt (1,115,394 characters); a resumed run knows it")
    parser.add_argument("--out_dir", default="out-shakespeare-char")
    parser.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out_dir")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
    parser.add_argument("--max_iters", type=int, help=f"(default: {BABY_GPT['max_iters']}; fewer for a quick try)")
    args = parser.parse_args()
    if args.data is None and not args.resume:
        parser.error("give the path of tinyshakespeare.txt (or --resume a run)")

    given = {name: value for name, value in (("data", args.data), ("max_iters", args.max_iters)) if value is not None}
    config = TrainConfig(**{**BABY_GPT, **given}, out_dir=args.out_dir)  # resumed: the data it was trained on
    start = time.perf_counter()
    with StopSignals() as stop:
        result = train(config, resume=args.resume, explicit=tuple(given), overwrite=args.overwrite,
                       progress=Progress(), stop=stop)
    elapsed = time.perf_counter() - start
    val, first = result["losses"].get("val"), result["start_iter"]
    session = f" for iterations {first}-{result['iter_num']} (resumed; earlier sessions not counted)" if first else ""
    median = f"median step {result['median_step_ms']:.1f} ms" if result["median_step_ms"] else "no steps taken"
    print(f"\nval loss {val:.4f} at iteration {result['iter_num']}, wall time {elapsed:.0f} s{session} ({median})")

    model, tokenizer = result["model"], result["batches"].tokenizer
    start_ids = tokenizer.encode("\n")[None, :]
    text = tokenizer.decode(model.generate(start_ids, 500, temperature=0.8, top_k=200)[0])
    print("\n--- sample ---" + text)
    return 0


if __name__ == "__main__":
    here = shlex.quote(sys.argv[0])
    sys.exit(exit_status(main, prog=os.path.basename(sys.argv[0]),
                         resume_command=f"python {here} --resume --out_dir {{out_dir}}"))

"""Teach a GPT 2-digit addition, minGPT-style, and score it on held-out problems.

    python examples/adder.py
    python examples/adder.py --resume          # continue after Ctrl-C, or train longer

Each example is the digits of a and b followed by the digits of a + b written
least-significant first ("85 + 50" -> 8 5 5 0 | 5 3 1), so the model emits
the carry in the order it is needed. The loss is taken only on the answer.
10% of all 10,000 problems are held out as the test split: the loss on it is
the one logged (and picks ckpt_best.npz), and the score is the fraction of
those problems answered exactly right with greedy decoding.
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
from tinygrad_gpt.train import TrainConfig, task_accuracy, train  # noqa: E402

ADDER_GPT = dict(
    n_layer=2, n_head=4, n_embd=64, batch_size=64, dropout=0.0, bias=False,
    max_iters=3000, lr_decay_iters=3000, learning_rate=2e-3, min_lr=1e-4, warmup_iters=100,
    beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=500, eval_iters=10, log_interval=50,
)


def main():
    tinygrad_gpt.tune_process()  # the process-wide settings for speed, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="out-adder")
    parser.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out_dir")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
    parser.add_argument("--max_iters", type=int, help=f"(default: {ADDER_GPT['max_iters']})")
    args = parser.parse_args()

    given = {"max_iters": args.max_iters, "lr_decay_iters": args.max_iters} if args.max_iters is not None else {}
    config = TrainConfig(**{**ADDER_GPT, **given}, data="adder", out_dir=args.out_dir)
    start = time.perf_counter()
    with StopSignals() as stop:
        result = train(config, resume=args.resume, explicit=tuple(given), overwrite=args.overwrite,
                       progress=Progress(), stop=stop)
    model, task = result["model"], result["batches"].task
    accuracy = task_accuracy(model, task, split="test")
    n_test, first = len(task.problems("test")), result["start_iter"]
    session = f" for iterations {first}-{result['iter_num']} (resumed; earlier sessions not counted)" if first else ""
    print(f"\nexact match on {n_test} held-out problems: {accuracy:.2%} "
          f"({round((1 - accuracy) * n_test)} wrong), wall time {time.perf_counter() - start:.0f} s{session}")
    return 0


if __name__ == "__main__":
    here = shlex.quote(sys.argv[0])
    sys.exit(exit_status(main, prog=os.path.basename(sys.argv[0]),
                         resume_command=f"python {here} --resume --out_dir {{out_dir}}"))

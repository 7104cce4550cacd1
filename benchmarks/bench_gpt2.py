"""GPT-2 small on a laptop: our GPT against transformers' GPT2LMHeadModel on PyTorch CPU, same run.

    python benchmarks/bench_gpt2.py              # 3 alternating rounds (~5 minutes on 2 cores)
    python benchmarks/bench_gpt2.py --rounds 1

Both models have GPT-2 small's shape (12 layers, 12 heads, n_embd 768, vocabulary 50,257,
1024 positions) with random weights, float32. Two tasks:

* generate: greedy decoding with the KV cache, batch 1, a 128-token prompt, 64 new
  tokens; tokens/s counts the new tokens (the prompt's forward pass is in the time).
* score: one forward pass over a batch of 4 x 256 tokens with the loss over every
  position (logits for all of them), as an evaluation harness scores text; tokens/s
  counts the 1024 tokens.

Every measurement runs in a fresh process of its own (one framework, one task), so each
process's peak resident memory (VmHWM) is that framework's for the task, model building
included; PyTorch runs on 2 threads, ours on the package's settings. Each process warms up
(Numba's cache is filled by an untimed first process of ours), then times REPS runs and
reports the best. Rounds alternate the order of the frameworks so that drift of a shared
machine hits both alike; the table gives the range over rounds and the ratio of medians.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)
PROMPT, NEW_TOKENS = 128, 64  # generate: batch 1
SCORE_BATCH, SCORE_T = 4, 256
TORCH_THREADS = 2  # the setting; on a loaded machine PyTorch may do better with 1 (--torch-threads)
SEED = 0


def peak_rss_mib():
    """This process's peak resident memory (VmHWM; not ru_maxrss, which a child inherits)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status: this benchmark measures memory on Linux only")


def best_seconds(run, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def ours_child(task, reps):
    import numpy as np

    sys.path.insert(0, REPO)
    from tinygrad_gpt.gpt import GPT, GPTConfig
    from tinygrad_gpt.tensor import no_grad

    model = GPT(GPTConfig(**SHAPE, gelu_approximate="tanh")).eval()
    rng = np.random.default_rng(SEED)
    if task == "generate":
        prompt = rng.integers(0, SHAPE["vocab_size"], (1, PROMPT))  # (1, 128)
        model.generate(prompt, 2, temperature=0)  # warm-up

        def run():
            model.generate(prompt, NEW_TOKENS, temperature=0)

        return NEW_TOKENS / best_seconds(run, reps)
    idx = rng.integers(0, SHAPE["vocab_size"], (SCORE_BATCH, SCORE_T + 1))  # (B, T + 1)

    def run():
        with no_grad():
            model(idx[:, :-1], targets=idx[:, 1:])

    run()  # warm-up
    return SCORE_BATCH * SCORE_T / best_seconds(run, reps)


def transformers_child(task, reps, torch_threads):
    import torch
    import transformers

    torch.set_num_threads(torch_threads)
    config = transformers.GPT2Config(n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"],
                                     vocab_size=SHAPE["vocab_size"], n_positions=SHAPE["block_size"])
    model = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(SEED)
    if task == "generate":
        prompt = torch.randint(0, SHAPE["vocab_size"], (1, PROMPT), generator=gen)  # (1, 128)
        mask = torch.ones_like(prompt)
        kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=True)

        def run(new_tokens=NEW_TOKENS):
            with torch.no_grad():
                out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            assert out.shape[1] == PROMPT + new_tokens

        run(2)  # warm-up
        return NEW_TOKENS / best_seconds(run, reps)
    idx = torch.randint(0, SHAPE["vocab_size"], (SCORE_BATCH, SCORE_T + 1), generator=gen)  # (B, T + 1)

    def run():
        with torch.no_grad():
            model(idx[:, :-1], labels=idx[:, :-1])  # labels shift inside: the same 1024 logits and loss

    run()  # warm-up
    return SCORE_BATCH * SCORE_T / best_seconds(run, reps)


def measure(framework, task, reps, torch_threads=TORCH_THREADS):
    """(tokens/s, peak RSS MiB) of a fresh process running `task` with `framework`."""
    out = subprocess.run([sys.executable, __file__, "--child", framework, "--task", task, "--reps", str(reps),
                          "--torch-threads", str(torch_threads)], check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["tokens_per_s"], result["peak_mib"]


def header(torch_threads):
    import numba
    import numpy

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    versions = f"Python {platform.python_version()}, NumPy {numpy.__version__}, Numba {numba.__version__}"
    try:
        import torch
        import transformers

        versions += f", PyTorch {torch.__version__} ({torch_threads} threads), transformers {transformers.__version__}"
    except ImportError:
        versions += ", PyTorch/transformers not installed (our figures alone)"
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; {versions}")
    print(f"model: GPT-2 small shape {SHAPE}, random weights, float32")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2, help="timed runs per process (the best is kept)")
    parser.add_argument("--tasks", default="generate,score")
    parser.add_argument("--torch-threads", type=int, default=TORCH_THREADS, help="PyTorch's threads (default: 2)")
    parser.add_argument("--child", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["generate", "score"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "ours":
            tokens_per_s = ours_child(args.task, args.reps)
        else:
            tokens_per_s = transformers_child(args.task, args.reps, args.torch_threads)
        print(json.dumps({"tokens_per_s": tokens_per_s, "peak_mib": peak_rss_mib()}))
        return
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    header(args.torch_threads)
    try:
        import transformers  # noqa: F401

        frameworks = ["ours", "transformers"]
    except ImportError:
        frameworks = ["ours"]
    tasks = args.tasks.split(",")
    measure("ours", "score", 1)  # untimed: fills Numba's cache, whose compilation would count in memory
    results = {(fw, task): [] for fw in frameworks for task in tasks}
    for round_number in range(args.rounds):
        order = frameworks if round_number % 2 == 0 else frameworks[::-1]
        for task in tasks:
            for fw in order:
                results[fw, task].append(measure(fw, task, args.reps, args.torch_threads))
                speed, mib = results[fw, task][-1]
                print(f"  round {round_number + 1}: {fw:12s} {task:8s} {speed:8.1f} tokens/s  peak {mib:6.0f} MiB",
                      flush=True)
    print("\n| task | framework | tokens/s (range over rounds) | peak RSS MiB |")
    print("|---|---|---|---|")
    for task in tasks:
        for fw in frameworks:
            speeds, mibs = zip(*results[fw, task])
            print(f"| {task} | {fw} | {min(speeds):.1f}-{max(speeds):.1f} | {max(mibs):.0f} |")
    if "transformers" in frameworks:
        print()
        for task in tasks:
            ours, theirs = ([s for s, _ in results[fw, task]] for fw in frameworks)
            ours_mib, theirs_mib = (max(m for _, m in results[fw, task]) for fw in frameworks)
            print(f"{task}: ours / transformers speed {statistics.median(ours) / statistics.median(theirs):.2f}x "
                  f"(medians), peak memory {ours_mib / theirs_mib:.2f}x")
    print(f"\n(the machine may be shared: {args.rounds} alternating rounds; compare ratios, not absolute figures)")


if __name__ == "__main__":
    main()

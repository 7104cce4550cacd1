"""Training-step, sampling and memory benchmark: tinygrad_gpt against PyTorch, same run.

    python benchmarks/bench_train.py            # all of it (~5 minutes)
    python benchmarks/bench_train.py --quick    # fewer steps, configs (a) and (c)

One step = zero_grad + forward + loss + backward + AdamW, float32, on a fixed
random batch. Both models have identical weights (PyTorch's twin is loaded from
our state_dict). Steps are timed in interleaved rounds (ours, theirs, ours, ...)
so that the machine's drift hits both alike; we report the median step time,
tokens/s and the ratio. Both run in this one process, so PyTorch runs with the
settings `tinygrad_gpt.tune_process()` makes for the whole process (glibc malloc
thresholds, OpenMP spin; see kernels/tuning/), which speed it up too. A
second table times PyTorch in a process of its own that never imports
tinygrad_gpt (torch_twin.py run as a script), as a user would run it. Peak memory
(RSS) comes from a fresh subprocess per framework running the baby config (ours after
a first run that fills Numba's cache). Without PyTorch installed, our figures alone.
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import tinygrad_gpt as tg  # noqa: E402
from tinygrad_gpt.gpt import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.optim import configure_optimizer  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

torch = None  # imported by load_torch(), so our memory child never loads PyTorch's libraries


def load_torch():
    """PyTorch and the twin helpers, or None when PyTorch is not installed."""
    global torch, configure_torch_optimizer, twin_of
    try:
        import torch

        from torch_twin import configure_torch_optimizer, twin_of
    except ImportError:
        torch = None
    return torch

CONFIGS = {  # name: (n_layer, n_head, n_embd, block_size, batch_size)
    "a": (4, 4, 128, 64, 12),
    "b": (6, 6, 384, 256, 8),
    "c": (2, 2, 64, 32, 32),
}
VOCAB = 65


def build(name):
    n_layer, n_head, n_embd, block_size, batch_size = CONFIGS[name]
    tg.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=VOCAB, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0, bias=False)
    batch_rng = np.random.default_rng(0)
    x = batch_rng.integers(0, VOCAB, (batch_size, block_size))
    y = batch_rng.integers(0, VOCAB, (batch_size, block_size))
    return GPT(config), x, y


def our_stepper(model, x, y):
    optimizer = configure_optimizer(model, 1e-3, (0.9, 0.99), 0.1)

    def step():
        optimizer.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()

    return step


def torch_stepper(model, x, y):
    twin = twin_of(model)
    optimizer = configure_torch_optimizer(twin, 1e-3, (0.9, 0.99), 0.1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = twin(tx, ty)
        loss.backward()
        optimizer.step()

    return step


def torch_alone_seconds(name, steps):
    """Median step of a PyTorch twin of config `name`, timed in a fresh process without tinygrad_gpt."""
    script = os.path.join(REPO, "benchmarks", "torch_twin.py")
    out = subprocess.run([sys.executable, script, "--time-steps", *map(str, CONFIGS[name]), str(steps)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def bench_torch_alone(names, steps, ours):
    print("\n## PyTorch in a process of its own (no tinygrad_gpt import, so PyTorch's own malloc and OpenMP defaults)\n")
    print("| config | PyTorch alone ms | ours ms (table above) | ours/PyTorch-alone speed |")
    print("|---|---|---|---|")
    for name in names:
        alone = torch_alone_seconds(name, steps)
        print(f"| ({name}) | {alone * 1e3:.1f} | {ours[name] * 1e3:.1f} | **{alone / ours[name]:.2f}x** |", flush=True)


def time_interleaved(steppers, warmup, steps, rounds=4):
    """Median seconds per step for each stepper, measured in alternating rounds."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steppers}
    per_round = max(steps // rounds, 1)
    for _ in range(rounds):
        for name, step in steppers.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_steps(names, warmup, steps):
    print(f"\n## Training step (median of {steps} steps after {warmup} warm-up, float32)\n")
    print("| config (layers/heads/embd, block, batch) | ours ms | ours tok/s | PyTorch ms | PyTorch tok/s | ours/PyTorch speed |")
    print("|---|---|---|---|---|---|")
    ours = {}
    for name in names:
        model, x, y = build(name)
        steppers = {"ours": our_stepper(model, x, y)}
        if torch is not None:
            steppers["torch"] = torch_stepper(model, x, y)
        t = time_interleaved(steppers, warmup, steps)
        ours[name] = t["ours"]
        tokens = x.size
        l, h, e, bs, b = CONFIGS[name]
        row = f"| ({name}) {l}/{h}/{e}, {bs}, {b} | {t['ours'] * 1e3:.1f} | {tokens / t['ours']:,.0f} |"
        if "torch" in t:
            row += f" {t['torch'] * 1e3:.1f} | {tokens / t['torch']:,.0f} | **{t['torch'] / t['ours']:.2f}x** |"
        else:
            row += " - | - | - |"
        print(row, flush=True)
    return ours


def bench_sampling(new_tokens):
    print(f"\n## Sampling at the baby config (a): {new_tokens} new tokens from a 1-token prompt, batch 1\n")
    model, _, _ = build("a")
    prompt = np.zeros((1, 1), dtype=np.int64)
    results = {}

    def timed(fn):
        fn()  # warm-up (JIT, caches)
        t0 = time.perf_counter()
        fn()
        return new_tokens / (time.perf_counter() - t0)

    results["ours, KV cache"] = timed(lambda: model.generate(prompt, new_tokens, top_k=None))
    results["ours, no cache"] = timed(lambda: model.generate(prompt, new_tokens, use_cache=False))
    if torch is not None:
        twin = twin_of(model).eval()
        tp = torch.from_numpy(prompt)
        results["PyTorch (nanoGPT loop, no cache)"] = timed(lambda: twin.generate(tp, new_tokens))
    print("| sampler | tokens/s | vs PyTorch |")
    print("|---|---|---|")
    base = results.get("PyTorch (nanoGPT loop, no cache)")
    for name, rate in results.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"| {name} | {rate:,.0f} | {ratio} |", flush=True)


def memory_child(framework, steps):
    """Run `steps` baby-config training steps in this fresh process; print peak RSS in MiB."""
    model, x, y = build("a")
    step = our_stepper(model, x, y) if framework == "ours" else torch_stepper(model, x, y)
    for _ in range(steps):
        step()
    print(peak_rss_mib())


def peak_rss_mib():
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent across fork + exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def bench_memory(steps):
    print(f"\n## Peak memory (RSS) of a fresh process running {steps} baby-config (a) training steps "
          "(ours with Numba's cache filled)\n")
    frameworks = ["ours"] + (["torch"] if torch is not None else [])
    peaks = {}
    for fw in frameworks:
        # Ours twice: the first run may compile kernels into Numba's cache (LLVM's memory
        # would count, 100+ MiB), the second measures what every later run uses.
        for _ in range(2 if fw == "ours" else 1):
            out = subprocess.run([sys.executable, __file__, "--memory-child", fw, "--steps", str(steps)],
                                 check=True, capture_output=True, text=True).stdout
        peaks[fw] = float(out.strip().splitlines()[-1])
    print("| framework | peak RSS MiB |")
    print("|---|---|")
    for fw, mib in peaks.items():
        print(f"| {'ours' if fw == 'ours' else 'PyTorch'} | {mib:.0f} |")
    if "torch" in peaks:
        print(f"\nours / PyTorch peak RSS: {peaks['ours'] / peaks['torch']:.2f}")


def main():
    tg.tune_process()  # as a training program does, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; configs (a) and (c) only")
    parser.add_argument("--configs", default=None, help="which configs, e.g. 'ac' (default: abc)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--memory-child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        if args.memory_child == "torch":
            load_torch()
        memory_child(args.memory_child, args.steps)
        return
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    if load_torch() is not None:
        torch.set_num_threads(os.cpu_count())
    steps = 8 if args.quick else args.steps
    names = args.configs or ("ac" if args.quick else "abc")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", PyTorch not installed"))
    ours = bench_steps(names, warmup=5 if not args.quick else 2, steps=steps)
    if torch is not None:
        bench_torch_alone(names, steps, ours)
    bench_sampling(new_tokens=100 if args.quick else 300)
    bench_memory(steps=20 if args.quick else 50)


if __name__ == "__main__":
    main()

"""Speed of the Numba kernels against their plain-NumPy references, measured in one run.

    python benchmarks/bench_kernels.py            # the full run, 1-3 minutes
    python benchmarks/bench_kernels.py --quick    # fewer repeats, for a smoke test
    python benchmarks/bench_kernels.py --emulate-avx2   # the kernels as compiled for an AVX2 CPU

For the two GPT shapes of the issue, the baby config (B=12, T=64, C=128, nh=4, V=65) and a
bigger one (B=8, T=256, C=384, nh=6, V=65), it prints:

1. each kernel's forward and backward against its `*_ref`, and their sum: median time,
   the ratio ref / kernel, and GB/s (bytes the kernel must read and write) or GFLOP/s;
2. every matrix product of a GPT training step: np.matmul, the `matmul` dispatcher the
   ops call, and the handwritten Numba GEMM (`gemm` / `bmm`) with its share of
   np.matmul's GFLOP/s;
3. one transformer block, forward and backward, with its products done by np.matmul
   and by the dispatcher (each in a fresh process): the measurement behind the
   dispatch rule, see `kernels.tuning.dispatch.uses_numba_gemm`;
4. start-up: a fresh process until its first kernel call returns, with an empty Numba
   cache (cold: compiles) and again with the cache filled (warm).

Times are medians of several repeats after a warm-up, float32 (the training dtype).
Numba's threads are pinned (OMP_PROC_BIND=true, unless set otherwise): between the
pauses below the worker thread falls asleep, and woken on the main thread's core it
would make single calls 4-7x slower, which a training step does not see (see
tinygrad_gpt/kernels/tuning/threads.py).
Kernel and reference (and, for the products, the dispatcher) are timed in three rounds
of alternating blocks, each block at least 20 ms of calls and after a 0.12 s pause:
after a multithreaded BLAS call OpenBLAS keeps a thread spinning for ~0.1 s, which
would otherwise steal a core from whatever is timed next.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_PROC_BIND", "true")  # before Numba starts its threads; see the docstring

# --emulate-avx2: Numba generates code for an AVX2 CPU without AVX-512 (Intel Haswell to
# Raptor Lake, AMD Zen 1-3), on this machine. Read here, before Numba is imported: it
# takes the target from these variables once, at import.
AVX2_FEATURES = ("+64bit,+adx,+aes,+avx,+avx2,+bmi,+bmi2,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,"
                 "+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt,"
                 "-avx512f,-avx512bw,-avx512dq,-avx512vl,-avx512cd")
if "--emulate-avx2" in sys.argv:
    os.environ.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2_FEATURES)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

import numpy as np  # noqa: E402

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt.kernels import fast as K  # noqa: E402
from tinygrad_gpt.kernels import reference as R  # noqa: E402
from tinygrad_gpt.kernels.tuning.target import TILE_SHAPES, vector_isa  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

CONFIGS = {
    "baby": dict(B=12, T=64, C=128, nh=4, V=65),
    "bigger": dict(B=8, T=256, C=384, nh=6, V=65),
}
N_LAYER = 4  # for the size of the AdamW parameter vector
SPIN_PAUSE = 0.12  # seconds: longer than OpenBLAS's ~0.1 s of spinning after a call
ROUNDS = 3  # blocks of calls per function timed, alternating with the others
MIN_BLOCK_SECONDS = 0.02  # a block of short calls is made at least this long
MAX_BLOCK_CALLS = 2000
DTYPE = np.float32
FUSED_TARGET = 3.0  # softmax / layernorm / GELU / cross-entropy, forward + backward
GEMM_SHARE_TARGET = 0.5  # handwritten GEMM's GFLOP/s against np.matmul's, linear layers


# ----------------------------------------------------------------------------- timing


def median_time(fn, repeats):
    """Median wall time of fn() in seconds, after two warm-up calls.

    Over `repeats` calls, or more for a short call: enough to fill MIN_BLOCK_SECONDS, so
    that a product of 50 us is not judged on a quarter of a millisecond of samples.
    """
    fn()  # the warm-up: it may wake a sleeping thread, so the second call sizes the block
    start = time.perf_counter()
    fn()
    calls = max(repeats, min(MAX_BLOCK_CALLS, int(MIN_BLOCK_SECONDS / (time.perf_counter() - start))))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(fns, repeats):
    """Seconds per call of each of fns: medians over ROUNDS alternating blocks, each after a pause."""
    samples = [[] for _ in fns]
    block = max(1, repeats // 2)
    for _ in range(ROUNDS):
        for fn, times in zip(fns, samples):
            time.sleep(SPIN_PAUSE)
            times.append(median_time(fn, block))
    return [float(np.median(times)) for times in samples]


# ----------------------------------------------------------------------------- machine


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')}"
    except Exception:  # older NumPy without mode="dicts": the name is not essential
        pass
    import numba

    K.softmax_forward(np.ones((2, 2), DTYPE))  # a parallel kernel call starts Numba's thread pool
    return "\n".join([
        f"machine: {cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}",
        f"numpy {np.__version__} (BLAS: {blas}), numba {numba.__version__}, "
        f"{numba.config.NUMBA_NUM_THREADS} Numba threads, threading layer {numba.threading_layer()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, "
        f"OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND')}",
        f"Numba compiles for: {numba.config.CPU_NAME or 'this CPU'}, vector instructions {vector_isa()}, "
        f"GEMM tile {'x'.join(map(str, TILE_SHAPES[vector_isa()]))}, SLP vectorizer {'on' if numba.config.SLP_VECTORIZE else 'off'}",
    ])


# ----------------------------------------------------------------------------- kernels


def kernel_cases(cfg, rng):
    """(name, shape text, ref fwd, kernel fwd, ref bwd, kernel bwd, bytes fwd, bytes bwd, flops fwd, flops bwd)."""
    B, T, C, nh, V = cfg["B"], cfg["T"], cfg["C"], cfg["nh"], cfg["V"]
    N, hs = B * T, C // nh
    item = np.dtype(DTYPE).itemsize

    def rand(*shape):
        return rng.standard_normal(shape).astype(DTYPE)

    cases = []

    scores = rand(B, nh, T, T)
    y_att = K.softmax_forward(scores, True)
    d_att = rand(B, nh, T, T)
    n = scores.size
    cases.append(("softmax (causal)", f"({B},{nh},{T},{T})",
                  lambda: R.softmax_forward(scores, True), lambda: K.softmax_forward(scores, True),
                  lambda: R.softmax_backward(y_att, d_att), lambda: K.softmax_backward(y_att, d_att),
                  2 * n * item, 3 * n * item, None, None))

    x = rand(N, C)
    w, b = rand(C), rand(C)
    dy = rand(N, C)
    _, mean, rstd = K.layernorm_forward(x, w, b, 1e-5)
    cases.append(("layernorm", f"({N},{C})",
                  lambda: R.layernorm_forward(x, w, b, 1e-5), lambda: K.layernorm_forward(x, w, b, 1e-5),
                  lambda: R.layernorm_backward(dy, x, w, mean, rstd), lambda: K.layernorm_backward(dy, x, w, mean, rstd),
                  2 * x.nbytes, 3 * x.nbytes, None, None))

    h = rand(N, 4 * C)
    dh = rand(N, 4 * C)
    for approximate in ("tanh", "none"):
        cases.append((f"gelu ({approximate})", f"({N},{4 * C})",
                      lambda a=approximate: R.gelu_forward(h, a), lambda a=approximate: K.gelu_forward(h, a),
                      lambda a=approximate: R.gelu_backward(h, dh, a), lambda a=approximate: K.gelu_backward(h, dh, a),
                      2 * h.nbytes, 3 * h.nbytes, None, None))

    logits = rand(N, V) * 3
    targets = rng.integers(0, V, N)
    _, lse = K.cross_entropy_forward(logits, targets, -100)
    cases.append(("cross-entropy", f"({N},{V})",
                  lambda: R.cross_entropy_forward(logits, targets, -100), lambda: K.cross_entropy_forward(logits, targets, -100),
                  lambda: R.cross_entropy_backward(logits, targets, lse, 1.0, -100),
                  lambda: K.cross_entropy_backward(logits, targets, lse, 1.0, -100),
                  logits.nbytes, 2 * logits.nbytes, None, None))

    q, k, v, d = (rand(B, nh, T, hs) for _ in range(4))
    scale = 1 / np.sqrt(hs)
    _, att = K.attention_forward(q, k, v, scale, True)
    product = 2 * B * nh * T * T * hs  # flops of one (T x hs) @ (hs x T) product per head, all heads
    cases.append(("attention (causal)", f"({B},{nh},{T},{hs})",
                  lambda: R.attention_forward(q, k, v, scale, True), lambda: K.attention_forward(q, k, v, scale, True),
                  lambda: R.attention_backward(d, q, k, v, att, scale), lambda: K.attention_backward(d, q, k, v, att, scale),
                  None, None, 2 * product, 4 * product))

    idx = rng.integers(0, V, (B, T))
    dout = rand(B, T, C)
    cases.append(("embedding bwd", f"({N},{C})->({V},{C})", None, None,
                  lambda: R.embedding_backward(idx, dout, V), lambda: K.embedding_backward(idx, dout, V),
                  None, dout.nbytes + V * C * item, None, None))

    n_params = 12 * N_LAYER * C * C + (V + T) * C
    params = [rand(n_params), rand(n_params), np.zeros(n_params, DTYPE), np.zeros(n_params, DTYPE)]
    cases.append(("adamw step", f"{n_params} params", None, None,
                  lambda: R.adamw_step(*params, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3),
                  lambda: K.adamw_step(*params, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3),
                  None, 7 * n_params * item, None, None))
    return cases


def rate(seconds, nbytes, flops):
    if flops is not None:
        return f"{flops / seconds / 1e9:7.1f} GFLOP/s"
    return f"{nbytes / seconds / 1e9:7.1f} GB/s"


def run_kernels(repeats):
    print("\n== 1. Kernels against their NumPy references (float32; ratio = ref / kernel) ==")
    header = f"{'kernel':24s} {'config':7s} {'shape':22s} {'pass':8s} {'kernel ms':>10s} {'ref ms':>10s} {'ratio':>7s}  rate"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    results = {}
    for cfg_name, cfg in CONFIGS.items():
        for name, shape, ref_f, ker_f, ref_b, ker_b, bytes_f, bytes_b, flops_f, flops_b in kernel_cases(cfg, rng):
            totals = [0.0, 0.0]
            for pass_name, ref, ker, nbytes, flops in (("fwd", ref_f, ker_f, bytes_f, flops_f), ("bwd", ref_b, ker_b, bytes_b, flops_b)):
                if ref is None:
                    continue
                # The erf reference is a Python loop over elements: a few repeats are plenty.
                reps = 2 if name == "gelu (none)" else repeats
                t_ref, t_ker = compare((ref, ker), reps)
                totals[0] += t_ref
                totals[1] += t_ker
                print(f"{name:24s} {cfg_name:7s} {shape:22s} {pass_name:8s} {t_ker * 1e3:10.3f} {t_ref * 1e3:10.3f} "
                      f"{t_ref / t_ker:7.2f}  {rate(t_ker, nbytes, flops)}", flush=True)
            if ref_f is not None:
                print(f"{name:24s} {cfg_name:7s} {shape:22s} {'fwd+bwd':8s} {totals[1] * 1e3:10.3f} {totals[0] * 1e3:10.3f} "
                      f"{totals[0] / totals[1]:7.2f}", flush=True)
            results[(name, cfg_name)] = totals[0] / totals[1]
    return results


# ----------------------------------------------------------------------------- matmul


def training_products(cfg, rng):
    """Every product of one GPT training step: (name, a, b) with the strides the ops use."""
    B, T, C, nh, V = cfg["B"], cfg["T"], cfg["C"], cfg["nh"], cfg["V"]
    N, hs, G = B * T, C // nh, B * cfg["nh"]

    def rand(*shape):
        return rng.standard_normal(shape).astype(DTYPE)

    products = []
    for label, out in (("qkv", 3 * C), ("proj", C), ("fc", 4 * C), ("fc2", C), ("lm_head", V)):
        c_in = 4 * C if label == "fc2" else C
        x, W, dY = rand(N, c_in), rand(out, c_in), rand(N, out)
        products += [(f"{label} x@W^T", x, W.T), (f"{label} dY@W", dY, W), (f"{label} dY^T@x", dY.T, x)]
    q, k, v, dy = (rand(G, T, hs) for _ in range(4))
    att, ds = rand(G, T, T), rand(G, T, T)
    products += [("attn q@k^T", q, np.swapaxes(k, 1, 2)), ("attn att@v", att, v),
                 ("attn dy@v^T", dy, np.swapaxes(v, 1, 2)), ("attn att^T@dy", np.swapaxes(att, 1, 2), dy),
                 ("attn ds@k", ds, k), ("attn ds^T@q", np.swapaxes(ds, 1, 2), q)]
    return products


def run_matmul(repeats):
    print("\n== 2. Every product of a training step: np.matmul, the dispatcher, the handwritten GEMM (float32) ==")
    header = (f"{'product':16s} {'config':7s} {'a @ b':26s} {'np ms':>8s} {'GF/s':>6s} {'disp ms':>8s} {'path':6s} "
              f"{'ratio':>6s} {'gemm ms':>8s} {'GF/s':>6s} {'share':>6s}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(1)
    rows = []
    for cfg_name, cfg in CONFIGS.items():
        for name, a, b in training_products(cfg, rng):
            flops = 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.ndim == 3 else 1)
            handwritten = (lambda a=a, b=b: K.gemm(a, b)) if a.ndim == 2 else (lambda a=a, b=b: K.bmm(a, b))
            path = "numba" if K.uses_numba_gemm(a.shape, b.shape) else "blas"
            if path == "blas":  # the dispatcher then is np.matmul; timing it again only measures noise
                t_np, t_gemm = compare((lambda: np.matmul(a, b), handwritten), repeats)
                t_disp = t_np
            else:
                t_np, t_disp, t_gemm = compare((lambda: np.matmul(a, b), lambda: K.matmul(a, b), handwritten), repeats)
            shape = f"{a.shape}@{b.shape}".replace(" ", "")
            print(f"{name:16s} {cfg_name:7s} {shape:26s} {t_np * 1e3:8.3f} {flops / t_np / 1e9:6.0f} {t_disp * 1e3:8.3f} {path:6s} "
                  f"{t_np / t_disp:6.2f} {t_gemm * 1e3:8.3f} {flops / t_gemm / 1e9:6.0f} {t_np / t_gemm:6.2f}", flush=True)
            rows.append((name, cfg_name, t_np, t_disp, t_gemm))
    return rows


# ----------------------------------------------------------------------------- one block


def transformer_block_seconds(cfg_name, rule, repeats):
    """Median time of one transformer block, forward and backward, products by `rule` ('numpy' or 'dispatch')."""
    cfg = CONFIGS[cfg_name]
    B, T, C, nh = cfg["B"], cfg["T"], cfg["C"], cfg["nh"]
    N, hs = B * T, C // nh
    mm = np.matmul if rule == "numpy" else K.matmul
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, C)).astype(DTYPE)
    W = {name: (rng.standard_normal(shape) * 0.02).astype(DTYPE)
         for name, shape in (("qkv", (3 * C, C)), ("proj", (C, C)), ("fc", (4 * C, C)), ("fc2", (C, 4 * C)))}
    ln_w, ln_b = np.ones(C, DTYPE), np.zeros(C, DTYPE)
    scale = 1 / np.sqrt(hs)

    def heads(a):  # (N, C) -> (B, nh, T, hs) view
        return a.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)

    def step():
        h1, m1, r1 = K.layernorm_forward(x, ln_w, ln_b, 1e-5)
        qkv = mm(h1, W["qkv"].T)  # (N, 3C)
        q, k, v = (heads(part) for part in np.split(qkv, 3, axis=1))
        y, att = K.attention_forward(q, k, v, scale, True)
        y2 = y.transpose(0, 2, 1, 3).reshape(N, C)
        x2 = x + mm(y2, W["proj"].T)
        h2, m2, r2 = K.layernorm_forward(x2, ln_w, ln_b, 1e-5)
        u = mm(h2, W["fc"].T)  # (N, 4C)
        g = K.gelu_forward(u, "none")
        out = x2 + mm(g, W["fc2"].T)
        d_out = np.ones_like(out)
        dg, _ = mm(d_out, W["fc2"]), mm(d_out.T, g)
        du = K.gelu_backward(u, dg, "none")
        dh2, _ = mm(du, W["fc"]), mm(du.T, h2)
        dx2 = d_out + K.layernorm_backward(dh2, x2, ln_w, m2, r2)[0]
        dy2, _ = mm(dx2, W["proj"]), mm(dx2.T, y2)
        dq, dk, dv = K.attention_backward(heads(dy2), q, k, v, att, scale)
        dqkv = np.concatenate([t.transpose(0, 2, 1, 3).reshape(N, C) for t in (dq, dk, dv)], axis=1)  # (N, 3C)
        dh1, _ = mm(dqkv, W["qkv"]), mm(dqkv.T, h1)
        return K.layernorm_backward(dh1, x, ln_w, m1, r1)[0] + dx2

    for _ in range(2):
        step()
    return median_time(step, repeats)


def run_blocks(repeats):
    print("\n== 3. One transformer block, forward + backward, products by np.matmul vs the dispatcher (fresh process each) ==")
    for cfg_name in CONFIGS:
        times = {}
        for rule in ("numpy", "dispatch"):
            out = subprocess.run([sys.executable, __file__, "--block", cfg_name, rule, str(repeats)],
                                 capture_output=True, text=True, check=True)
            times[rule] = float(out.stdout.split()[-1])
        print(f"{cfg_name:7s} products by np.matmul {times['numpy'] * 1e3:8.2f} ms   by matmul (dispatcher) "
              f"{times['dispatch'] * 1e3:8.2f} ms   ratio {times['numpy'] / times['dispatch']:.2f}", flush=True)


# ----------------------------------------------------------------------------- start-up

FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from tinygrad_gpt import kernels
kernels.softmax_forward(np.ones((4, 8), np.float32))
print(time.perf_counter() - start)
"""


def run_startup():
    print("\n== 4. Start-up: a new process until its first kernel call returns (softmax_forward, float32) ==")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache  # empty: the first process compiles, the second loads
        for label in ("cold (empty Numba cache)", "warm (cache filled by the run above)"):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            print(f"{label:38s} process wall {wall:6.2f} s   (inside Python: {float(out.stdout.split()[-1]):6.2f} s)", flush=True)
    return wall


# ----------------------------------------------------------------------------- main


def main():
    tinygrad_gpt.tune_process()  # as a training program does, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)  # see AVX2_FEATURES
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test, noisier)")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="compile the kernels for an AVX2 CPU without AVX-512 (see AVX2_FEATURES)")
    parser.add_argument("--block", nargs=3, metavar=("CONFIG", "RULE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        print(transformer_block_seconds(args.block[0], args.block[1], int(args.block[2])))
        return
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    repeats = 4 if args.quick else 10
    started = time.perf_counter()
    print(machine_description())
    fused = run_kernels(repeats)
    products = run_matmul(repeats)
    run_blocks(5 if args.quick else 10)
    warm = run_startup()

    print("\n== Targets ==")
    for name in ("softmax (causal)", "layernorm", "gelu (tanh)", "gelu (none)", "cross-entropy"):
        ratios = [fused[(name, cfg)] for cfg in CONFIGS]
        verdict = "met" if min(ratios) >= FUSED_TARGET else "NOT met"
        print(f"{name:18s} fwd+bwd >= {FUSED_TARGET:.0f}x the reference at both shapes: "
              f"{' / '.join(f'{r:.2f}x' for r in ratios)}  {verdict}")
    slower = [(n, c, t_np / t_d) for n, c, t_np, t_d, _ in products if t_d > t_np]
    print(f"dispatcher never slower than np.matmul on a product (alone): "
          f"{'met' if not slower else 'NOT met: ' + ', '.join(f'{n} {c} {r:.2f}x' for n, c, r in slower)}")
    linear = [t_np / t_g for n, c, t_np, _, t_g in products if not n.startswith("attn")]
    print(f"handwritten GEMM >= {GEMM_SHARE_TARGET:.0%} of np.matmul's GFLOP/s on linear layers: "
          f"worst {min(linear):.0%}, median {np.median(linear):.0%}  {'met' if min(linear) >= GEMM_SHARE_TARGET else 'NOT met'}")
    attention = [(n, c, t_np / t_g) for n, c, t_np, _, t_g in products if n.startswith("attn")]
    print("handwritten bmm faster than np.matmul on the attention products: "
          + ", ".join(f"{n[5:]} {c} {r:.2f}x" for n, c, r in attention))
    print(f"warm start reaches the first kernel call in under 2 s: {warm:.2f} s  {'met' if warm < 2 else 'NOT met'}")
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

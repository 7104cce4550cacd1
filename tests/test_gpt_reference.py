"""The whole GPT against PyTorch, by parameter name.

`fixtures/gpt_reference.npz` holds a small GPT's weights, one batch, and what a
float64 PyTorch twin of the model computed from them: the logits, the loss,
the gradient of every named parameter, and the losses of ten AdamW steps
(`fixtures/make_reference.py` writes it; these tests need no PyTorch). Every
gradient is matched by name, and the name sets must be equal, so no tensor
can be skipped or compared twice.

How close is close enough. Errors are measured per tensor, relative to the
tensor's largest entry: |ours - reference| <= tol * max|reference|. A plain
elementwise rtol cannot work, because some exact gradients are zero (the key
bias of attention shifts every score of a row equally, which softmax ignores,
so its gradient is 0 and both sides hold only rounding noise), and a fixed
atol cannot either, because the gradients span four orders of magnitude
(LayerNorm gains ~1e-4, the embedding ~0.2): an atol fit for one would make
the other unchecked.

* float64: each side rounds at 1.1e-16 per operation, and the longest chains
  here are a few hundred operations (sums over 48 hidden units or 24
  positions, through two blocks), so the two implementations, summing in
  different orders, differ by ~1e-15 of a tensor's scale (measured: 8e-16).
  We allow 1e-10 for the tensors and the losses: far above rounding, and far
  below any real mistake (a wrong or missing term changes some entry by a
  sizeable fraction of the scale).
* float32: the weights are rounded to float32 (relative 6e-8) and every
  operation rounds at 6e-8; through the same few hundred operations the
  errors grow to ~1e-7..1e-6 of a tensor's scale (measured: at most 3e-7 for
  the gradients and logits, 1.4e-8 for the loss). We allow 1e-5 for tensors
  and AdamW losses, and 1e-6 for the first loss, a mean of log-sum-exps that
  rounds only a few times. Adam divides each gradient by its own running
  size, so a rounding difference in a tiny gradient entry could become a
  full-size step difference; Adam's eps (1e-8) in the denominator damps this
  for entries that are pure noise (the key bias, ~1e-10), and the measured
  drift over ten steps is at most 6e-8 of the loss.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinygrad_gpt import kernels, no_grad
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.optim import configure_optimizer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gpt_reference.npz"

# Tolerance relative to a tensor's largest entry (or to the loss); see the module docstring.
TOLERANCE = {
    "float64": {"tensor": 1e-10, "loss": 1e-10, "adamw_loss": 1e-10},
    "float32": {"tensor": 1e-5, "loss": 1e-6, "adamw_loss": 1e-5},
}
DTYPES = [np.float64, np.float32]


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def entries(reference, prefix):
    """{name: array} for the fixture keys `prefix + name`."""
    return {key[len(prefix) :]: value for key, value in reference.items() if key.startswith(prefix)}


def reference_model(reference, dtype):
    """Our GPT with the fixture's configuration and weights, in `dtype`."""
    config = GPTConfig.from_dict(json.loads(str(reference["config"])))
    model = GPT(config).to(dtype)
    model.load_state_dict(entries(reference, "weight/"))
    return model


def assert_names_equal(what, ours, theirs):
    """Fail naming every name present on only one side."""
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    assert not missing and not extra, (
        f"{what}: in the fixture but not in our model: {missing}; in our model but not in the fixture: {extra}"
    )


def assert_close(what, ours, theirs, tol):
    """|ours - theirs| <= tol * max|theirs| everywhere, shapes equal."""
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, reference {theirs.shape}"
    error = np.abs(ours.astype(np.float64) - theirs).max()
    scale = np.abs(theirs).max()
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:g} * max|reference| {scale:.3g}"


def test_the_fixture_names_every_weight_and_gradient_of_our_model(reference):
    model = reference_model(reference, np.float64)
    assert_names_equal("weights", list(model.state_dict()), entries(reference, "weight/"))
    assert_names_equal("gradients", [name for name, _ in model.named_parameters()], entries(reference, "grad/"))
    weights = entries(reference, "weight/")
    # The fixture's tied weights are one array under two names, as in our state_dict.
    np.testing.assert_array_equal(weights["lm_head.weight"], weights["transformer.wte.weight"])
    # Weight decay and ignored targets are only exercised if the fixture has them.
    assert json.loads(str(reference["adamw"]))["weight_decay"] > 0
    assert (reference["targets"] == -1).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_logits_loss_and_every_gradient_match_pytorch(reference, dtype):
    tol = TOLERANCE[dtype.__name__]
    model = reference_model(reference, dtype)
    logits, loss = model(reference["idx"], reference["targets"])
    loss.backward()

    assert logits.dtype == dtype and loss.dtype == dtype
    assert_close("logits", logits.data, reference["logits"], tol["tensor"])
    assert abs(loss.item() - reference["loss"]) <= tol["loss"] * abs(reference["loss"]), (
        f"loss {loss.item()!r}, reference {reference['loss']!r}"
    )
    grads = entries(reference, "grad/")
    named = dict(model.named_parameters())
    assert_names_equal("gradients", named, grads)
    for name, param in named.items():
        assert param.grad is not None, f"{name} got no gradient"
        assert_close(f"grad of {name}", param.grad, grads[name], tol["tensor"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_ten_adamw_steps_match_pytorch(reference, dtype):
    tol = TOLERANCE[dtype.__name__]["adamw_loss"]
    hyper = json.loads(str(reference["adamw"]))
    model = reference_model(reference, dtype)
    optimizer = configure_optimizer(
        model, lr=hyper["lr"], betas=tuple(hyper["betas"]), weight_decay=hyper["weight_decay"], eps=hyper["eps"]
    )
    idx, targets = reference["idx"], reference["targets"]
    losses = []
    for _ in range(hyper["steps"]):
        optimizer.zero_grad()
        _, loss = model(idx, targets)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    with no_grad():
        losses.append(model(idx, targets)[1].item())  # after the last step

    expected = reference["adamw_losses"]
    assert len(losses) == len(expected) == hyper["steps"] + 1
    for step, (ours, theirs) in enumerate(zip(losses, expected)):
        assert abs(ours - theirs) <= tol * abs(theirs), f"loss after {step} steps: {ours!r}, reference {theirs!r}"
    # The steps must move the loss, or comparing them would test nothing.
    assert expected[-1] < expected[0] - 0.5


# ----------------------------------------------------------------------------- both kernel sets
#
# The tests above run on whichever kernel set is active (CI runs this file once with
# each, TINYGPT_KERNELS=reference the second time). The tests below train on both
# sets in one process and compare them.

TRAIN_STEPS = 5
# float32, fast against reference kernels: each set matches the float64 PyTorch twin to
# 1e-5 of the loss over ten AdamW steps (test_ten_adamw_steps_match_pytorch), so the two
# differ by at most 2e-5 of the loss; both round at float32's 6e-8 per operation and
# only sum in different orders (16 vector lanes against NumPy's pairwise sums).
MODES_AGREE = 2e-5


def short_training_run(reference, dtype, mode):
    """Losses of TRAIN_STEPS AdamW steps on random batches of the fixture's vocabulary, on kernel set `mode`."""
    previous = kernels.active()
    kernels.use(mode)
    try:
        model = reference_model(reference, dtype)
        optimizer = configure_optimizer(model, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
        rng = np.random.default_rng(0)
        B, T = reference["idx"].shape
        losses = []
        for _ in range(TRAIN_STEPS):
            idx = rng.integers(0, model.config.vocab_size, size=(B, T + 1))  # (B, T + 1)
            optimizer.zero_grad()
            _, loss = model(idx[:, :-1], idx[:, 1:])
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
        return losses
    finally:
        kernels.use(previous)


def test_fast_and_reference_kernels_train_to_the_same_losses(reference):
    fast = short_training_run(reference, np.float32, "fast")
    ref = short_training_run(reference, np.float32, "reference")
    for step, (a, b) in enumerate(zip(fast, ref)):
        assert abs(a - b) <= MODES_AGREE * abs(b), f"step {step}: fast {a!r}, reference {b!r}"
    assert fast[-1] != fast[0]  # the steps moved the weights, so later losses test the backward too


NUMBA_FREE_STEP = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoNumba(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "numba" or name.startswith("numba."):
                raise ImportError("numba is not installed (simulated)")

    sys.meta_path.insert(0, NoNumba())
    sys.path.insert(0, {tests!r})
    import numpy as np
    import tinygrad_gpt
    from test_gpt_reference import FIXTURE, TRAIN_STEPS, reference_model, short_training_run

    with np.load(FIXTURE, allow_pickle=False) as npz:
        reference = {{key: npz[key] for key in npz.files}}
    losses = short_training_run(reference, np.float32, "reference")
    print(json.dumps({{"losses": losses, "numba_imported": "numba" in sys.modules,
                      "mode": tinygrad_gpt.kernels.active()}}))
""")


def test_reference_kernels_train_without_numba(reference):
    # A subprocess in which `import numba` fails, as on a machine without it: forward,
    # backward and AdamW steps must run there on the reference kernels, and give the
    # losses this process gets on them (the same NumPy operations: equal to the bit).
    script = NUMBA_FREE_STEP.format(tests=str(Path(__file__).resolve().parent))
    env = {**os.environ, "TINYGPT_KERNELS": "reference"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["numba_imported"]
    assert result["mode"] == "reference"
    assert result["losses"] == short_training_run(reference, np.float32, "reference")

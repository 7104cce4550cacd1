"""LoRA: the layer, wrapping a GPT, training only the adapters, merging, adapter files."""

import os

import numpy as np
import pytest

from tinygrad_gpt import rng
from tinygrad_gpt.checkpoint import CheckpointError
from tinygrad_gpt.lora import (
    apply_lora,
    base_fingerprint,
    load_adapter,
    lora_config,
    merge_lora,
    optimizer_state_bytes,
    save_adapter,
    trainable_parameters,
)
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.nn import Linear, LoRALinear
from tinygrad_gpt.optim import AdamW
from tinygrad_gpt.tensor import Tensor, no_grad

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16, bias=True)


def small_gpt(seed=0, dtype=np.float64):
    rng.manual_seed(seed)
    return GPT(CONFIG).to(dtype)


def batch(seed=0, B=3, T=8):
    g = np.random.default_rng(seed)
    return g.integers(0, CONFIG.vocab_size, (B, T)), g.integers(0, CONFIG.vocab_size, (B, T))


def randomize_adapters(model, seed=1):
    """B starts at zero; give it values so the adapters change the function."""
    g = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith(".lora_B"):
            p.data[...] = g.standard_normal(p.shape) * 0.1


def all_logits(model, x):
    with no_grad():
        return model(x, x)[0].data  # with targets: logits at every position


# ---- the layer ----------------------------------------------------------------


def test_a_new_adapter_computes_exactly_what_the_base_layer_did():
    rng.manual_seed(0)
    base = Linear(6, 5)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    expected = base(x).data.copy()
    layer = LoRALinear(base, rank=2, alpha=4)
    assert np.all(layer.lora_B.data == 0) and np.any(layer.lora_A.data != 0)
    np.testing.assert_array_equal(layer(x).data, expected)  # B = 0 adds exact zeros


def test_only_the_adapter_matrices_require_grad_and_get_gradients():
    layer = LoRALinear(Linear(6, 5), rank=2, alpha=2)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.lora_A.grad.shape == (2, 6) and layer.lora_B.grad.shape == (5, 2)


def test_merged_layer_equals_the_adapted_one():
    layer = LoRALinear(Linear(6, 5, dtype=np.float64), rank=3, alpha=6)
    layer.lora_B.data[...] = np.random.default_rng(1).standard_normal((5, 3))
    x = Tensor(np.random.default_rng(2).standard_normal((4, 6)))
    merged = layer.merged()
    assert isinstance(merged, Linear)
    # float64, one reassociation (x (B A)^T against (x A^T) B^T): rounding ~1e-15 relative.
    np.testing.assert_allclose(merged(x).data, layer(x).data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [0, -1, 6, 2.0, True])
def test_a_rank_outside_one_to_the_smaller_side_is_refused(rank):
    with pytest.raises(ValueError, match="rank must be an integer from 1 to 5"):
        LoRALinear(Linear(6, 5), rank=rank, alpha=1)


# ---- a whole GPT --------------------------------------------------------------


def test_apply_lora_wraps_the_attention_and_mlp_projections_by_default():
    model = small_gpt()
    wrapped = apply_lora(model, rank=2, alpha=4)
    kinds = sorted({name.split(".", 3)[-1] for name in wrapped})
    assert kinds == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert len(wrapped) == 4 * CONFIG.n_layer
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{name}.{ab}" for name in wrapped for ab in ("lora_A", "lora_B")}
    assert lora_config(model) == {"rank": 2, "alpha": 4.0, "targets": wrapped}


def test_apply_lora_keeps_the_function_and_the_base_names():
    model = small_gpt()
    x, _ = batch()
    before, keys = all_logits(model, x), set(model.state_dict())
    apply_lora(model, rank=2, alpha=4, targets=["c_attn"])
    np.testing.assert_array_equal(all_logits(model, x), before)
    assert set(model.state_dict()) - keys == {f"transformer.h.{i}.attn.c_attn.lora_{ab}" for i in range(2) for ab in "AB"}


def test_bad_targets_and_ranks_are_refused_before_the_model_changes():
    model = small_gpt()
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match="unknown LoRA target 'q_proj'.*attn.c_attn"):
        apply_lora(model, rank=2, alpha=4, targets=["c_attn", "q_proj"])
    with pytest.raises(ValueError, match="--lora_rank must be from 1 to 16"):
        apply_lora(model, rank=17, alpha=4)
    with pytest.raises(ValueError, match="--lora_rank"):
        apply_lora(model, rank=0, alpha=4)
    assert list(model.state_dict()) == keys and all(p.requires_grad for p in model.parameters())


def test_training_changes_only_the_adapters_and_the_optimizer_keeps_state_only_for_them():
    model = small_gpt(dtype=np.float32)
    frozen_before = {k: v.copy() for k, v in model.state_dict().items()}
    full_optimizer = AdamW(model.parameters(), lr=1e-2)
    apply_lora(model, rank=2, alpha=4)
    optimizer = AdamW(trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    x, y = batch()
    losses = []
    for _ in range(5):
        _, loss = model(x, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]  # the adapters do learn
    after = model.state_dict()
    for name, array in frozen_before.items():
        np.testing.assert_array_equal(after[name], array, err_msg=name)  # bit-identical, decay included
    n_adapter = sum(p.numel() for p in trainable_parameters(model))
    n_total = sum(p.numel() for p in model.parameters())
    assert optimizer_state_bytes(optimizer) == 2 * 4 * n_adapter + 8  # exp_avg, exp_avg_sq (float32), step
    assert optimizer_state_bytes(full_optimizer) == 2 * 4 * (n_total - n_adapter) + 8


def test_merged_gpt_has_the_base_layout_and_the_same_logits():
    model = small_gpt()
    apply_lora(model, rank=3, alpha=6)
    randomize_adapters(model)
    x, _ = batch()
    adapted = all_logits(model, x)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    plain = small_gpt(seed=5)
    plain.load_state_dict(model.state_dict())  # the base model's names and shapes exactly
    # float64; merging reassociates one product per layer: rounding ~1e-15 relative.
    np.testing.assert_allclose(all_logits(plain, x), adapted, rtol=1e-10, atol=1e-10)
    assert all(p.requires_grad for p in model.parameters())


def test_merging_changes_the_function_when_the_adapters_are_not_zero():
    """Guard for the test above: the adapters must matter, else equality proves nothing."""
    model = small_gpt()
    x, _ = batch()
    base = all_logits(model, x)
    apply_lora(model, rank=3, alpha=6)
    randomize_adapters(model)
    assert np.abs(all_logits(merge_lora(model), x) - base).max() > 1e-3


# ---- adapter files ------------------------------------------------------------


def test_an_adapter_file_holds_only_the_adapters_and_applies_to_its_base(tmp_path):
    model = small_gpt()
    apply_lora(model, rank=2, alpha=4, targets=["c_attn"])
    randomize_adapters(model)
    x, _ = batch()
    expected = all_logits(model, x)
    path = tmp_path / "adapter.npz"
    save_adapter(path, model, extra={"template": "Q: {prompt}\nA:"})
    n_adapter = sum(p.numel() for p in trainable_parameters(model))
    assert os.path.getsize(path) < 8 * n_adapter + 4096  # the adapters and a small JSON header, no base
    base = small_gpt()
    metadata = load_adapter(path, base)
    assert metadata["template"] == "Q: {prompt}\nA:"
    np.testing.assert_array_equal(all_logits(base, x), expected)


def test_an_adapter_is_refused_on_another_base(tmp_path):
    model = small_gpt()
    apply_lora(model, rank=2, alpha=4)
    save_adapter(tmp_path / "a.npz", model)
    other = small_gpt(seed=1)
    fingerprint = base_fingerprint(other)
    with pytest.raises(CheckpointError, match="other base weights"):
        load_adapter(tmp_path / "a.npz", other)
    assert base_fingerprint(other) == fingerprint and lora_config(other) is None

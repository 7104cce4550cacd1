"""Layers: PyTorch's conventions for shapes and names, modes, dtype, repr."""

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt import nn
from tinygrad_gpt.tensor import Tensor


class TwoLayers(nn.Module):
    def __init__(self):
        self.first = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4, bias=False)
        self.drop = nn.Dropout(0.5)
        self.second = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.second(self.drop(self.norm(self.first(x))))


def test_linear_weight_is_out_by_in_and_computes_x_wt_plus_b():
    layer = nn.Linear(3, 5)
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (5,)
    x = np.random.default_rng(0).standard_normal((2, 7, 3)).astype(np.float32)
    y = layer(Tensor(x))
    assert y.shape == (2, 7, 5)
    # float32 matmul over 3 terms: a few ulps of O(1) values.
    np.testing.assert_allclose(y.data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5, atol=1e-6)


def test_linear_init_is_uniform_within_pytorchs_bound():
    layer = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.9 * bound


def test_named_parameters_follow_attribute_order_with_dotted_names():
    names = [name for name, _ in TwoLayers().named_parameters()]
    assert names == ["first.weight", "first.bias", "norm.weight", "second.weight"]


def test_a_shared_parameter_is_listed_once_but_saved_under_each_name():
    model = nn.ModuleDict(first=nn.Linear(4, 4), second=nn.Linear(4, 4))
    model.second.weight = model.first.weight  # tied, as the GPT's wte and lm_head
    assert [n for n, _ in model.named_parameters()] == ["first.weight", "first.bias", "second.bias"]
    assert list(model.state_dict()) == ["first.weight", "first.bias", "second.weight", "second.bias"]


def test_eval_turns_dropout_off_and_train_turns_it_back_on():
    model = TwoLayers()
    x = Tensor(np.ones((8, 3), np.float32))
    model.eval()
    assert not model.drop.training
    np.testing.assert_array_equal(model(x).data, model(x).data)  # deterministic
    model.train()
    assert model.drop.training
    tg.manual_seed(0)
    first = model(x).data
    assert not np.array_equal(first, model(x).data)  # a new mask each call


def test_zero_grad_forgets_gradients():
    model = TwoLayers().eval()
    model(Tensor(np.ones((2, 3), np.float32))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_to_changes_every_parameter_dtype():
    model = TwoLayers().to(np.float64)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    with pytest.raises(TypeError, match="float32 or float64, got int32"):
        model.to(np.int32)


def test_repr_shows_the_tree_with_each_layers_settings():
    text = repr(TwoLayers())
    assert "(first): Linear(in_features=3, out_features=4, bias=True)" in text
    assert "(norm): LayerNorm(4, eps=1e-05, bias=False)" in text
    assert "(drop): Dropout(p=0.5)" in text


def test_dropout_probability_is_checked():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        nn.Dropout(1)


def test_draw_into_draws_the_numbers_of_one_call_a_block_at_a_time(monkeypatch):
    from tinygrad_gpt import rng

    monkeypatch.setattr(rng, "DRAW_CHUNK_ELEMENTS", 10)  # blocks of 3 rows of 3: the last one short
    whole = np.random.default_rng(5).normal(0.0, 0.02, (7, 3)).astype(np.float32)  # (7, 3)
    gen = np.random.default_rng(5)
    blocks = rng.draw_into(np.empty((7, 3), np.float32), lambda shape: gen.normal(0.0, 0.02, shape))
    np.testing.assert_array_equal(blocks, whole)

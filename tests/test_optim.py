"""Optimizers, clipping and the schedule, each against its formula written out here."""

import numpy as np
import pytest

from tinygrad_gpt import nn
from tinygrad_gpt.optim import SGD, AdamW, clip_grad_norm_, configure_optimizer, cosine_lr


def param(values, grad):
    p = nn.Parameter(np.array(values, dtype=np.float64))
    p.grad = np.array(grad, dtype=np.float64)
    return p


def test_sgd_with_momentum_and_weight_decay_follows_pytorchs_update():
    p = param([1.0, -2.0], [0.5, 0.25])
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    expected, buf = np.array([1.0, -2.0]), None
    for _ in range(3):
        g = p.grad + 0.01 * expected
        buf = g if buf is None else 0.9 * buf + g
        expected = expected - 0.1 * buf
        opt.step()
        np.testing.assert_allclose(p.data, expected, rtol=1e-15)


def test_adamw_follows_the_decoupled_update_step_by_step():
    p = param([1.0, -2.0, 0.0], [0.3, -0.1, 0.2])
    opt = AdamW([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    theta, m, v = p.data.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, 5):
        g = p.grad
        theta = theta * (1 - 0.01 * 0.1)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        theta = theta - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
        opt.step()
        np.testing.assert_allclose(p.data, theta, rtol=1e-12)


def test_adamw_state_round_trips_and_resumes_identically():
    a, b = param([1.0, 2.0], [0.1, -0.2]), param([1.0, 2.0], [0.1, -0.2])
    first, second = AdamW([a], lr=0.1), AdamW([b], lr=0.1)
    first.step()
    second.step()
    copy = AdamW([b], lr=0.1)
    copy.load_state_dict(second.state_dict())
    first.step()
    copy.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_configure_optimizer_decays_only_matrices():
    layer = nn.Linear(3, 2)
    opt = configure_optimizer(layer, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(layer.weight)] == 0.1 and decay[id(layer.bias)] == 0.0


def test_clip_grad_norm_scales_all_gradients_together():
    a, b = param([0.0, 0.0], [3.0, 0.0]), param([0.0], [4.0])  # global norm 5
    assert clip_grad_norm_([a, b], 1.0) == pytest.approx(5.0)
    # The scale is max_norm / (norm + 1e-6), as PyTorch's: 2e-7 relative below the exact 0.2.
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0.0, 0.8], rtol=1e-6)
    assert clip_grad_norm_([a, b], 10.0) == pytest.approx(1.0, rel=1e-6)  # under the limit: unchanged
    np.testing.assert_allclose(b.grad, [0.8], rtol=1e-6)


def test_cosine_schedule_warms_up_decays_and_floors():
    lr = lambda it: cosine_lr(it, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)
    assert lr(0) == pytest.approx(1e-3 / 11)
    assert lr(10) == pytest.approx(1e-3)
    assert lr(60) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # halfway: cos(pi/2) = 0
    assert lr(110) == pytest.approx(1e-4) and lr(500) == 1e-4
    assert all(lr(i) >= lr(i + 1) for i in range(10, 200))


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "lr must be >= 0"),
    (dict(betas=(0.9, 1.0)), r"betas must be in \[0, 1\)"),
    (dict(weight_decay=-0.1), "eps and weight_decay must be >= 0"),
])
def test_adamw_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([param([1.0], [0.0])], **kwargs)


def test_an_empty_parameter_list_is_refused():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)

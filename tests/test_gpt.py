"""Tests of the assembled GPT: it learns, it is reproducible, its gradient is right,
its KV cache changes nothing, and its sampling and state_dict behave as documented.

The comparison with PyTorch lives in test_gpt_reference.py; these tests need
no outside reference.
"""

import math

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt import GradcheckError, gradcheck, no_grad
from tinygrad_gpt.gpt import GPT, GPTConfig, KVCache, sample_next_token
from tinygrad_gpt.optim import configure_optimizer


def tiny_config(**overrides):
    fields = dict(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)
    return GPTConfig(**{**fields, **overrides})


def random_gpt(config, dtype=np.float64, seed=0):
    """A GPT whose every weight is N(0, 0.5).

    GPT-2's init (std 0.02) makes the attention almost uniform and the logits
    almost equal, so a wrong path through the model would barely show and
    greedy decoding would hinge on near-ties. Larger weights make every path
    carry signal and the logits of different tokens far apart.
    """
    tg.manual_seed(seed)
    model = GPT(config).to(dtype)
    gen = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = gen.normal(0.0, 0.5, p.shape)
    return model


def fixed_batch(config, B, seed=0):
    """idx and targets (B, block_size): each row's next tokens, with distinct first tokens
    so that every target is a function of its prefix (the batch can be fit exactly)."""
    gen = np.random.default_rng(seed)
    seq = gen.integers(0, config.vocab_size, (B, config.block_size + 1))  # (B, T + 1)
    seq[:, 0] = gen.permutation(config.vocab_size)[:B]
    return seq[:, :-1].copy(), seq[:, 1:].copy()  # (B, T), (B, T), not views of one array


def train(model, idx, targets, steps, lr=1e-2):
    """Losses of `steps` AdamW steps (nanoGPT's settings) on one batch."""
    optimizer = configure_optimizer(model, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        _, loss = model(idx, targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


# ---- learning -----------------------------------------------------------------------


def test_gpt_overfits_one_batch():
    config = tiny_config()
    tg.manual_seed(0)
    model = GPT(config)
    idx, targets = fixed_batch(config, B=4)
    losses = train(model, idx, targets, steps=100, lr=3e-2)
    # GPT-2's small init predicts nearly uniformly, so training starts near log(V).
    assert abs(losses[0] - math.log(config.vocab_size)) < 0.1
    # Every target is determined by its prefix, so a model that attends to the
    # whole prefix can drive the loss to 0. It passes 0.01 after ~35 steps
    # (measured over three seeds), so 100 steps leave a wide margin.
    assert losses[-1] < 0.01, f"loss is still {losses[-1]:.4f} after {len(losses)} steps"


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_training_with_the_same_seed_is_bit_identical(dropout):
    config = tiny_config(dropout=dropout)
    idx, targets = fixed_batch(config, B=3)

    def run(seed):
        tg.manual_seed(seed)  # fixes the init and, with dropout, every mask
        return train(GPT(config), idx, targets, steps=5)

    first, second = run(7), run(7)
    assert np.array_equal(first, second), f"{first} != {second}"
    # The seed must matter, or the equality above would be vacuous.
    assert not np.array_equal(first, run(8))


def test_dropout_is_random_in_training_and_off_in_eval():
    config = tiny_config(dropout=0.2)
    model = random_gpt(config, np.float32)
    idx, targets = fixed_batch(config, B=2)
    with no_grad():
        train_losses = [model(idx, targets)[1].item() for _ in range(2)]
        model.eval()
        eval_losses = [model(idx, targets)[1].item() for _ in range(2)]
    assert train_losses[0] != train_losses[1]
    assert eval_losses[0] == eval_losses[1]


# ---- the gradient of the whole model --------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_gpt_loss_gradcheck_every_element_of_every_parameter(bias):
    # Tiny enough (~530 weights) that every element is checked, in well under a second.
    config = GPTConfig(block_size=4, vocab_size=5, n_layer=2, n_head=2, n_embd=4, dropout=0.0, bias=bias)
    model = random_gpt(config)
    idx, targets = fixed_batch(config, B=2)
    targets[0, 1] = -1  # an ignored target must pass no gradient
    named = list(model.named_parameters())
    assert [name for name, _ in named if name.startswith("lm_head")] == []  # tied: checked as wte

    def loss(param):  # reads `param` through the model, which holds it
        return model(idx, targets)[1]

    # Tolerances: central differences with eps 1e-6 on a loss of ~2 in float64
    # have rounding error ~1e-16 * 2 / 1e-6 = 2e-10 (measured worst: 3e-10) and
    # truncation error ~eps^2 = 1e-12, so atol 1e-8 holds with a 30x margin
    # while the gradients themselves are ~1e-2 to 0.5.
    for name, param in named:
        try:
            gradcheck(loss, [param], eps=1e-6, atol=1e-8, rtol=1e-6)
        except GradcheckError as error:
            pytest.fail(f"{name}: {error}")


# ---- KV cache -----------------------------------------------------------------------

# float64: the cached and full forward sum the same terms, maybe in another order,
# so they agree to ~1e-16 relative; 1e-12 leaves room. float32: the same at
# 6e-8 per operation through a few hundred operations, so 1e-5.
CACHE_TOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("prompt_length", [1, 3])
def test_kv_cache_gives_the_logits_of_the_full_forward_at_every_position(dtype, prompt_length):
    config = tiny_config()
    model = random_gpt(config, dtype).eval()
    idx, _ = fixed_batch(config, B=2)
    T = config.block_size
    with no_grad():
        # With targets the model returns the logits of every position.
        full, _ = model(idx, targets=np.zeros_like(idx))  # (B, T, V)
        cache = KVCache(config, batch_size=2, dtype=dtype)
        # A prompt of several tokens at once (queries attend to earlier cached keys
        # and causally among themselves), then one token at a time.
        first, _ = model(idx[:, :prompt_length], kv_cache=cache)  # (B, 1, V): last prompt position
        steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(prompt_length, T)]
    cached = np.concatenate([first.data] + [s.data for s in steps], axis=1)  # (B, T - prompt + 1, V)
    expected = full.data[:, prompt_length - 1 :]
    scale = np.abs(expected).max()
    assert np.abs(cached - expected).max() <= CACHE_TOL[dtype] * scale
    assert cache.length == T


def test_kv_cache_refuses_to_grow_past_block_size():
    config = tiny_config()
    model = random_gpt(config).eval()
    cache = KVCache(config, batch_size=1, dtype=np.float64)
    with no_grad():
        model(np.zeros((1, config.block_size), dtype=np.int64), kv_cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            model(np.zeros((1, 1), dtype=np.int64), kv_cache=cache)


def test_forward_without_targets_returns_the_last_position_only():
    config = tiny_config()
    model = random_gpt(config)
    idx, _ = fixed_batch(config, B=2)
    with no_grad():
        full, _ = model(idx, targets=np.zeros_like(idx))  # (B, T, V)
        last, loss = model(idx)  # (B, 1, V)
    assert loss is None
    np.testing.assert_array_equal(last.data, full.data[:, -1:])


@pytest.mark.parametrize(
    "idx, targets, match",
    [
        (np.zeros(4, dtype=np.int64), None, "idx must have shape"),
        (np.zeros((1, 9), dtype=np.int64), None, "longer than block_size"),
        (np.zeros((2, 4), dtype=np.int64), np.zeros((2, 3), dtype=np.int64), "targets"),
    ],
)
def test_forward_rejects_bad_shapes(idx, targets, match):
    model = random_gpt(tiny_config())
    with pytest.raises(ValueError, match=match):
        model(idx, targets)


# ---- generate -----------------------------------------------------------------------


def reference_generate(model, idx, max_new_tokens, temperature, generator, restart):
    """Generation written as plain uncached forwards over the context `generate` documents.

    restart=False is nanoGPT's loop: each token sees the last block_size tokens.
    restart=True is the KV-cache path: the context grows from the prompt's last
    block_size tokens until it would pass block_size, then restarts from the
    last block_size // 2 tokens.
    """
    block = model.config.block_size
    start = max(idx.shape[1] - block, 0)  # first position of the context
    with no_grad():
        for _ in range(max_new_tokens):
            length = idx.shape[1]
            if not restart:
                start = max(length - block, 0)
            elif length - start > block:
                start = length - block // 2
            logits, _ = model(idx[:, start:])  # (B, 1, V)
            token = sample_next_token(logits.data[:, -1], temperature, generator=generator)  # (B,)
            idx = np.concatenate([idx, token[:, None]], axis=1)  # (B, T + 1)
    return idx


def test_greedy_generate_is_the_same_with_and_without_cache_within_a_block():
    config = tiny_config()
    model = random_gpt(config).eval()
    prompt = np.array([[1, 2, 3], [4, 4, 0]])  # (2, 3)
    fill = config.block_size - prompt.shape[1]  # the whole output fits in one block
    cached = model.generate(prompt, fill, temperature=0)
    uncached = model.generate(prompt, fill, temperature=0, use_cache=False)
    expected = reference_generate(model, prompt, fill, 0.0, None, restart=False)
    assert cached.dtype == np.int64 and cached.shape == (2, config.block_size)
    np.testing.assert_array_equal(cached[:, :3], prompt)
    np.testing.assert_array_equal(cached, expected)
    np.testing.assert_array_equal(uncached, expected)


@pytest.mark.parametrize("use_cache", [False, True])
def test_generate_past_block_size_sees_the_documented_context(use_cache):
    # Sampling at temperature 1 from large random weights gives varied tokens, so
    # a token predicted from the wrong context would (almost surely) differ; the
    # same seed makes both sides draw the same uniforms.
    config = tiny_config()
    model = random_gpt(config).eval()
    prompt = np.array([[1, 2, 3], [4, 4, 0]])  # (2, 3)
    n = 3 * config.block_size  # the cache fills and restarts several times
    out = model.generate(prompt, n, temperature=1.0, generator=np.random.default_rng(0), use_cache=use_cache)
    expected = reference_generate(model, prompt, n, 1.0, np.random.default_rng(0), restart=use_cache)
    np.testing.assert_array_equal(out, expected)
    assert len(np.unique(out)) > 3  # the draws did vary


def test_generate_returns_a_tensor_for_a_tensor_and_keeps_training_mode():
    config = tiny_config(dropout=0.2)
    model = random_gpt(config)  # training mode, dropout on
    prompt = np.array([[1, 2]])
    first = model.generate(tg.Tensor(prompt), 5, temperature=0)
    second = model.generate(prompt, 5, temperature=0)
    assert isinstance(first, tg.Tensor)
    np.testing.assert_array_equal(first.data, second)  # generation runs in eval mode: no dropout
    assert model.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    model = random_gpt(tiny_config())
    with pytest.raises(ValueError, match=match):
        model.generate(np.array([[1, 2]]), **{"max_new_tokens": 3, **kwargs})


def test_generate_rejects_a_prompt_that_is_not_b_by_t():
    model = random_gpt(tiny_config())
    for prompt in (np.array([1, 2]), np.zeros((2, 0), dtype=np.int64)):
        with pytest.raises(ValueError, match="idx must have shape"):
            model.generate(prompt, 3)


@pytest.mark.parametrize("kwargs", [dict(top_k=1), dict(top_p=1e-9)], ids=["top_k=1", "top_p=1e-9"])
def test_sampling_from_one_token_equals_greedy(kwargs):
    model = random_gpt(tiny_config())
    prompt = np.array([[1, 2], [3, 0]])
    greedy = model.generate(prompt, 6, temperature=0)
    sampled = model.generate(prompt, 6, temperature=1.5, generator=np.random.default_rng(0), **kwargs)
    np.testing.assert_array_equal(sampled, greedy)


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = random_gpt(tiny_config())
    prompt = np.array([[1, 2], [3, 0]])

    def sample(seed):
        return model.generate(prompt, 6, temperature=2.0, generator=np.random.default_rng(seed))

    np.testing.assert_array_equal(sample(3), sample(3))
    assert not np.array_equal(sample(3), sample(4))
    # Without a generator, the library's seeded one is used.
    tg.manual_seed(5)
    first = model.generate(prompt, 6, temperature=2.0)
    tg.manual_seed(5)
    np.testing.assert_array_equal(model.generate(prompt, 6, temperature=2.0), first)


PROBS = np.array([0.5, 0.3, 0.15, 0.05])  # a distribution, likeliest first

# 20,000 draws: a frequency p has standard deviation sqrt(p (1 - p) / n) <= 0.0036,
# so 0.02 is more than 5 standard deviations; a wrong distribution (say,
# temperature ignored, or the wrong tokens kept) is off by far more.
DRAWS = 20_000


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # temperature 0.5 doubles the logits: probabilities proportional to p^2.
        (dict(temperature=0.5), PROBS**2 / np.sum(PROBS**2)),
        # top_k=2 keeps the two likeliest tokens, renormalized.
        (dict(top_k=2), np.array([0.5, 0.3, 0, 0]) / 0.8),
        # top_p=0.7: 0.5 alone is below 0.7, so 0.3 joins; 0.8 reaches it, so no more.
        (dict(top_p=0.7), np.array([0.5, 0.3, 0, 0]) / 0.8),
        # top_p=0.85: 0.5 + 0.3 = 0.8 < 0.85, so the third token is kept too.
        (dict(top_p=0.85), np.array([0.5, 0.3, 0.15, 0]) / 0.95),
    ],
    ids=["temperature", "top_k", "top_p=0.7", "top_p=0.85"],
)
def test_sample_next_token_draws_from_the_documented_distribution(kwargs, expected):
    order = np.array([1, 3, 0, 2])  # token ids by decreasing probability: the likeliest is not token 0
    logits = np.zeros((DRAWS, 4))  # (DRAWS, V): one row per draw
    logits[:, order] = np.log(PROBS)
    tokens = sample_next_token(logits, generator=np.random.default_rng(0), **{"temperature": 1.0, **kwargs})
    assert tokens.dtype == np.int64 and tokens.shape == (DRAWS,)
    frequencies = np.bincount(tokens, minlength=4)[order] / DRAWS
    np.testing.assert_allclose(frequencies, expected, atol=0.02)
    assert np.all(frequencies[expected == 0] == 0)  # excluded tokens are never drawn


# ---- state_dict ---------------------------------------------------------------------

# nanoGPT's state_dict for n_layer=1, bias=True, in its order, with its shapes
# (C = n_embd = 8, V = vocab_size = 11, block_size = 4).
NANOGPT_STATE_DICT = [
    ("transformer.wte.weight", (11, 8)),
    ("transformer.wpe.weight", (4, 8)),
    ("transformer.h.0.ln_1.weight", (8,)),
    ("transformer.h.0.ln_1.bias", (8,)),
    ("transformer.h.0.attn.c_attn.weight", (24, 8)),
    ("transformer.h.0.attn.c_attn.bias", (24,)),
    ("transformer.h.0.attn.c_proj.weight", (8, 8)),
    ("transformer.h.0.attn.c_proj.bias", (8,)),
    ("transformer.h.0.ln_2.weight", (8,)),
    ("transformer.h.0.ln_2.bias", (8,)),
    ("transformer.h.0.mlp.c_fc.weight", (32, 8)),
    ("transformer.h.0.mlp.c_fc.bias", (32,)),
    ("transformer.h.0.mlp.c_proj.weight", (8, 32)),
    ("transformer.h.0.mlp.c_proj.bias", (8,)),
    ("transformer.ln_f.weight", (8,)),
    ("transformer.ln_f.bias", (8,)),
    ("lm_head.weight", (11, 8)),
]
STATE_DICT_CONFIG = dict(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_and_shapes_are_nanogpts(bias):
    model = GPT(GPTConfig(**STATE_DICT_CONFIG, bias=bias))
    expected = [(name, shape) for name, shape in NANOGPT_STATE_DICT if bias or not name.endswith(".bias")]
    state = model.state_dict()
    assert [(name, array.shape) for name, array in state.items()] == expected
    assert all(array.dtype == np.float32 for array in state.values())
    np.testing.assert_array_equal(state["lm_head.weight"], state["transformer.wte.weight"])
    # The tied weight is one parameter: named once, under its first name.
    names = [name for name, _ in model.named_parameters()]
    assert names == [name for name, _ in expected if name != "lm_head.weight"]


def test_load_state_dict_round_trips_and_keeps_the_weights_tied():
    config = GPTConfig(**STATE_DICT_CONFIG)
    source, target = random_gpt(config, np.float32, seed=1), random_gpt(config, np.float32, seed=2)
    target.load_state_dict(source.state_dict())
    for (name, ours), theirs in zip(target.state_dict().items(), source.state_dict().values()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert target.lm_head.weight is target.transformer.wte.weight


def broken(state, change):
    """A copy of `state` with one thing wrong."""
    state = dict(state)
    if change == "missing":
        del state["transformer.h.0.ln_2.bias"]
    elif change == "unexpected":
        state["transformer.h.0.attn.bias"] = np.ones((1, 1, 4, 4))  # nanoGPT's old mask buffer
    else:
        state["transformer.h.0.mlp.c_fc.weight"] = np.ones((8, 32))  # transposed
    return state


@pytest.mark.parametrize(
    "change, error, match",
    [
        ("missing", ValueError, r"missing keys \['transformer\.h\.0\.ln_2\.bias'\]"),
        ("unexpected", ValueError, r"unexpected keys \['transformer\.h\.0\.attn\.bias'\]"),
        ("shape", ValueError, r"transformer\.h\.0\.mlp\.c_fc\.weight has shape \(8, 32\)"),
    ],
)
def test_load_state_dict_refuses_a_mismatch_and_changes_nothing(change, error, match):
    config = GPTConfig(**STATE_DICT_CONFIG)
    source, target = random_gpt(config, np.float32, seed=1), random_gpt(config, np.float32, seed=2)
    before = target.state_dict()
    with pytest.raises(error, match=match):
        target.load_state_dict(broken(source.state_dict(), change))
    for name, array in target.state_dict().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_a_kv_cache_with_gradients_on_is_refused():
    # The cache holds plain arrays: a gradient through it would silently miss k and v.
    model = GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    cache = KVCache(model.config, batch_size=1, dtype=np.float32)
    with pytest.raises(ValueError, match="kv_cache is for generation; use it inside `with no_grad"):
        model(np.zeros((1, 2), np.int64), kv_cache=cache)

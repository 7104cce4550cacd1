"""The GPT: nanoGPT's architecture, field names and state_dict keys.

A decoder-only transformer. Token and position embeddings are added, pass
through `n_layer` pre-LayerNorm blocks (causal self-attention, then a 4x MLP,
each added back to the residual stream), a final LayerNorm, and the language
model head, whose weight is the token embedding table (weight tying).

Shapes: B batch, T sequence length, C = n_embd, nh = n_head, hs = C // nh,
V = vocab_size.
"""

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from . import functional as F
from . import rng
from .nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList
from .tensor import Tensor, is_grad_enabled, no_grad
from .validate import check_int, check_number


@dataclass
class GPTConfig:
    """nanoGPT's configuration fields and defaults (GPT-2 small)."""

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    # The MLP's GELU: "none" is the exact erf form nanoGPT trains with; "tanh" is the
    # approximation GPT-2 was trained with (Hugging Face's "gelu_new"), which its weights need.
    gelu_approximate: str = "none"

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            check_int(f"GPTConfig: {name}", getattr(self, name), minimum=1)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        check_number("GPTConfig: dropout", self.dropout, minimum=0, below=1)
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig: bias must be true or false, got {self.bias!r}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"GPTConfig: gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict, refusing unknown keys (a typo would otherwise be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)


class KVCache:
    """The keys and values of the tokens seen so far, one pair per layer.

    During generation each new token only needs its own query against the
    keys and values of all earlier tokens, which do not change: caching them,
    the projections and the MLP run on one token per step instead of T (the
    attention still reads all T cached keys). Inference only: the cache holds
    plain arrays, so no gradient flows through it.
    """

    def __init__(self, config, batch_size, dtype):
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, config.block_size, hs)
        self.keys = [np.zeros(shape, dtype) for _ in range(config.n_layer)]  # each (B, nh, block, hs)
        self.values = [np.zeros(shape, dtype) for _ in range(config.n_layer)]  # each (B, nh, block, hs)
        self.length = 0  # tokens stored, the same for every layer
        self.block_size = config.block_size

    def append(self, layer, k, v):
        """Store this step's k, v (B, nh, T, hs) for `layer`; return all keys and values so far."""
        start, T = self.length, k.shape[2]
        self.keys[layer][:, :, start : start + T] = k.data
        self.values[layer][:, :, start : start + T] = v.data
        end = start + T
        return Tensor(self.keys[layer][:, :, :end]), Tensor(self.values[layer][:, :, :end])  # each (B, nh, end, hs)


class CausalSelfAttention(Module):
    def __init__(self, config):
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, kv_cache=None, layer=0):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # (B, nh, T_seen, hs)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(Module):
    def __init__(self, config):
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = GELU(config.gelu_approximate)  # "none": exact erf form, as nanoGPT's nn.GELU()
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(Module):
    def __init__(self, config):
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), kv_cache, layer)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class GPT(Module):
    def __init__(self, config):
        self.config = config
        self.transformer = ModuleDict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        )
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output layer scores tokens with their input embeddings.
        self.lm_head.weight = self.transformer.wte.weight
        self._init_weights()

    @classmethod
    def from_pretrained(cls, directory, dropout=0.0):
        """The GPT-2 of a Hugging Face directory (config.json, model.safetensors), see pretrained.py."""
        from .pretrained import load_pretrained  # here, not at the top: pretrained.py imports this file

        model, _ = load_pretrained(directory, dropout=dropout)
        return model

    def crop_block_size(self, block_size):
        """Keep the first `block_size` positions (nanoGPT's model surgery): fine-tuning a GPT-2
        of 1024 positions on shorter sequences then saves and resumes as a model of that size."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"GPT: block_size must be in [1, {self.config.block_size}], got {block_size}")
        self.config = replace(self.config, block_size=block_size)
        wpe = self.transformer.wpe
        wpe.weight.data, wpe.weight.grad = wpe.weight.data[:block_size].copy(), None  # (block_size, C)
        wpe.num_embeddings = block_size
        return self

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02) weights, zero biases, and the residual projections
        (c_proj) scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does
        not grow with depth (each block adds two of them)."""
        gen = rng.get_generator()
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.data[...] = 0
            elif name.endswith("weight") and p.ndim == 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj.weight") else 0.02
                rng.draw_into(p.data, lambda shape: gen.normal(0.0, std, shape))
            # LayerNorm weights (1-D) keep their ones.

    def get_num_params(self, non_embedding=True):
        """Parameter count; by default without the position embeddings (as nanoGPT).

        The token embeddings are counted because they are also the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, kv_cache=None):
        """Logits (B, T, V) and the mean cross-entropy loss against targets (B, T).

        Without targets (inference) only the last position goes through the head:
        logits (B, 1, V), loss None. `targets` equal to -1 are ignored. With a
        `kv_cache`, `idx` holds only the new tokens, placed after the cached ones.
        """
        idx = idx.data if isinstance(idx, Tensor) else np.asarray(idx)  # (B, T)
        if idx.ndim != 2:
            raise ValueError(f"GPT: idx must have shape (B, T), got {idx.shape}")
        B, T = idx.shape
        if kv_cache is not None and is_grad_enabled():
            raise ValueError("GPT: a kv_cache is for generation; use it inside `with no_grad():`")
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"GPT: sequence of length {start + T} is longer than block_size {self.config.block_size}"
            )
        pos = np.arange(start, start + T)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, layer)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.length += T
        x = self.transformer.ln_f(x)  # (B, T, C)
        if targets is None:
            logits = self.lm_head(x[:, -1:, :])  # (B, 1, V)
            return logits, None
        targets = targets.data if isinstance(targets, Tensor) else np.asarray(targets)  # (B, T)
        if targets.shape != idx.shape:
            raise ValueError(f"GPT: targets {targets.shape} must have the shape of idx {idx.shape}")
        logits = self.lm_head(x)  # (B, T, V)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.view(B * T, V), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, use_cache=True):
        """Continue each row of `idx` (B, T) by `max_new_tokens` sampled tokens.

        temperature 0 is greedy decoding; `top_k` keeps the k likeliest tokens;
        `top_p` keeps the smallest set whose probability reaches p (nucleus
        sampling). Draws come from `generator` (a np.random.Generator), else the
        library's seeded generator. The context is cropped to block_size.

        With `use_cache` (the default) keys and values are cached. Past
        block_size the positions of all tokens shift, so the cache restarts
        from the last block_size // 2 tokens, and each token sees between half
        a block and a block of context. `use_cache=False` recomputes the last
        block_size tokens at every step, exactly as nanoGPT does, at O(T) the cost.
        Returns an int64 array (B, T + max_new_tokens) (a Tensor if given one).
        """
        given_tensor = isinstance(idx, Tensor)
        idx = np.asarray(idx.data if given_tensor else idx)  # (B, T)
        stream = self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        with _inference(self):  # once here, so the stream's steps find eval mode set (see _inference)
            new_tokens = [token[:, None] for token in stream]  # each (B, 1)
        out = np.concatenate([idx.astype(np.int64)] + new_tokens, axis=1)  # (B, T + max_new_tokens)
        return Tensor(out) if given_tensor else out

    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                        use_cache=True):
        """The tokens `generate` appends, yielded as they are drawn: an int64 array (B,) per step.

        Same arguments as `generate`, checked here rather than at the first
        step. Nothing global is held between two steps (eval mode and
        `no_grad` are set around each forward and restored), so a caller may
        interleave several streams in one thread; closing the generator stops
        the generation and frees its KV cache.
        """
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        _check_sampling_args(idx, max_new_tokens, temperature, top_k, top_p)
        gen = generator if generator is not None else rng.get_generator()
        return self._stream(idx.astype(np.int64), max_new_tokens, temperature, top_k, top_p, gen, use_cache)

    def _stream(self, out, max_new_tokens, temperature, top_k, top_p, gen, use_cache):
        block = self.config.block_size
        cache = pending = None
        for _ in range(max_new_tokens):
            with _inference(self):
                if not use_cache:
                    logits, _ = self(out[:, -block:])  # (B, 1, V)
                else:
                    if cache is None or cache.length == block:
                        # Start the cache from the prompt, or restart it once full.
                        keep = block if cache is None else max(block // 2, 1)
                        cache = KVCache(self.config, out.shape[0], self.lm_head.weight.dtype)
                        pending = out[:, -keep:]  # (B, <= block)
                    logits, _ = self(pending, kv_cache=cache)  # (B, 1, V)
                next_token = sample_next_token(logits.data[:, -1, :], temperature, top_k, top_p, gen)  # (B,)
            out = np.concatenate([out, next_token[:, None]], axis=1)  # (B, T + 1)
            pending = next_token[:, None]  # (B, 1): only the new token goes through next
            yield next_token


@contextmanager
def _inference(model):
    """Eval mode without a graph, then the model's mode as it was.

    Switching modes walks every module (about 1 ms for the baby GPT), so it is
    done only when the model is in training mode: a model already in eval
    mode, as `generate` leaves it for its stream, pays nothing per step.
    """
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _check_sampling_args(idx, max_new_tokens, temperature, top_k, top_p):
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"generate: idx must have shape (B, T) with T >= 1, got {idx.shape}")
    check_int("generate: max_new_tokens", max_new_tokens, minimum=0)
    if not 0 <= temperature < math.inf:
        raise ValueError(f"generate: temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row of `logits` (B, V); returns int64 (B,).

    Works in float64 so that the cumulative sums of top-p and the sampling
    are not disturbed by float32 rounding.
    """
    logits = logits.astype(np.float64)  # (B, V)
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)  # (B,) greedy
    with np.errstate(over="ignore"):  # a tiny temperature sends non-maximal logits to -inf: right
        logits = (logits - logits.max(axis=-1, keepdims=True)) / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]  # (B, 1) the k-th largest
        logits = np.where(logits < kth, -np.inf, logits)  # (B, V)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))  # (B, V)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")  # (B, V) likeliest first
        sorted_probs = np.take_along_axis(probs, order, axis=-1)  # (B, V)
        # Keep a token if the probability of the tokens strictly likelier than it is
        # still below top_p: the smallest prefix reaching top_p (the first is always kept).
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # (B, V)
        keep_sorted = before < top_p  # (B, V)
        keep = np.zeros_like(keep_sorted)  # (B, V)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)  # (B, V)
        probs /= probs.sum(axis=-1, keepdims=True)
    gen = generator if generator is not None else rng.get_generator()
    # Inverse-CDF sampling: the first index whose cumulative probability exceeds u.
    u = gen.random((probs.shape[0], 1))  # (B, 1)
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    choice = (cdf <= u * cdf[:, -1:]).sum(axis=-1)  # (B,)
    return np.minimum(choice, probs.shape[-1] - 1).astype(np.int64)  # (B,)

"""A PyTorch twin of tinygrad_gpt's GPT, for cross-checks and comparison benchmarks.

The same architecture as nanoGPT (pre-LN blocks, fused qkv projection, 4x MLP
with exact GELU, tied lm_head/wte, optional biases) with the same
state_dict names, so weights move between the two models without renaming.
Needs PyTorch (`pip install torch==2.13.0`); the library itself never imports this.

Run as a script it times training steps of a twin on its own, in a process that
never imports tinygrad_gpt (whose import tunes malloc and OpenMP for the whole
process, PyTorch included): `python benchmarks/torch_twin.py --time-steps
N_LAYER N_HEAD N_EMBD BLOCK BATCH STEPS` prints the median step in seconds.
"""

import argparse
import time
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's; PyTorch's own lacks bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as nanoGPT

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """nanoGPT's sampling loop: no KV cache, the whole cropped context every step."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def twin_of(model, dtype=torch.float32):
    """A TorchGPT with the same config and weights as a tinygrad_gpt GPT."""
    twin = TorchGPT(model.config).to(dtype)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def configure_torch_optimizer(twin, lr, betas, weight_decay, eps=1e-8):
    """nanoGPT's AdamW grouping: decay only parameters with 2 or more dims."""
    params = [p for p in twin.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)



def time_steps_alone(n_layer, n_head, n_embd, block_size, batch_size, steps, vocab_size=65, warmup=5):
    """Median seconds of a training step (zero_grad, forward, backward, AdamW) of a fresh twin, float32."""
    torch.manual_seed(0)
    config = types.SimpleNamespace(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                                   vocab_size=vocab_size, dropout=0.0, bias=False)
    twin = TorchGPT(config)  # PyTorch's own init: the weights do not change the time of a step
    optimizer = configure_torch_optimizer(twin, 1e-3, (0.9, 0.99), 0.1)
    x = torch.randint(0, vocab_size, (batch_size, block_size))
    y = torch.randint(0, vocab_size, (batch_size, block_size))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        _, loss = twin(x, y)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Time training steps of a PyTorch twin in a process of its own.")
    parser.add_argument("--time-steps", nargs=6, type=int, required=True,
                        metavar=("N_LAYER", "N_HEAD", "N_EMBD", "BLOCK", "BATCH", "STEPS"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(time_steps_alone(*args.time_steps))

"""Draw what backprop walks: one transformer block's autograd graph, and where a trained GPT looks.

    python examples/draw_graph.py                           # the block's graph -> docs/images/block_graph.svg
    python examples/draw_graph.py --ckpt out-adder/ckpt_best.npz --prompt 8550
                                                            # + its attention map -> docs/images/attention_map.png

The graph is the one `loss.backward()` follows for a single `Block` (layer norm,
attention, MLP, two residual adds), drawn by `tinygrad_gpt.graph.to_dot` and
rendered by Graphviz's `dot` when it is installed (else a .dot file is written).
The attention map shows, for every head of one layer, how much each position
(row) attends to each earlier position (column): the softmax of q k^T / sqrt(hs)
that the fused attention op computes inside, recomputed here in plain NumPy.
Needs matplotlib for the map (`pip install -e '.[plot]'`).
"""

import argparse
import math
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_gpt as tg  # noqa: E402
from tinygrad_gpt.gpt import Block, GPTConfig  # noqa: E402
from tinygrad_gpt.graph import render, to_dot  # noqa: E402
from tinygrad_gpt.tensor import no_grad  # noqa: E402
from tinygrad_gpt.training_state import load_model_and_tokenizer  # noqa: E402


def draw_block_graph(path):
    """One Block's forward on a (1, 4, 8) input, summed to a scalar: the graph its backward walks."""
    tg.manual_seed(0)
    block = Block(GPTConfig(block_size=4, vocab_size=1, n_layer=1, n_head=2, n_embd=8, bias=True))
    x = tg.Tensor(np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32), requires_grad=True)
    out = block(x).sum()  # a scalar, as a loss would be
    dot = to_dot(out, params={"x": x, **{f"block.{name}": p for name, p in block.named_parameters()}})
    if shutil.which("dot") is None:
        path = os.path.splitext(path)[0] + ".dot"
    return render(dot, path)


def attention_probabilities(model, idx, layer):
    """The attention weights (nh, T, T) of `layer` for one sequence idx (1, T)."""
    block = model.transformer.h[layer]
    T = idx.shape[1]
    with no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(np.arange(T))  # (1, T, C)
        for earlier in list(model.transformer.h)[:layer]:
            x = earlier(x)  # (1, T, C)
        qkv = block.attn.c_attn(block.ln_1(x)).data  # (1, T, 3C)
    C, nh = model.config.n_embd, model.config.n_head
    hs = C // nh
    q, k = qkv[0, :, :C], qkv[0, :, C : 2 * C]  # (T, C) each
    q = q.reshape(T, nh, hs).transpose(1, 0, 2)  # (nh, T, hs)
    k = k.reshape(T, nh, hs).transpose(1, 0, 2)  # (nh, T, hs)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(hs)  # (nh, T, T)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)  # causal: no look ahead
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)  # (nh, T, T)
    return weights / weights.sum(axis=-1, keepdims=True)  # (nh, T, T), rows sum to 1


def draw_attention_map(ckpt, prompt, layer, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, tokenizer, _ = load_model_and_tokenizer(ckpt)
    if not 0 <= layer < model.config.n_layer:
        raise ValueError(f"--layer must be in [0, {model.config.n_layer}) for {ckpt}, got {layer}")
    idx = tokenizer.encode(prompt)[None, -model.config.block_size :]  # (1, T)
    weights = attention_probabilities(model, idx, layer)  # (nh, T, T)
    labels = [tokenizer.decode([int(i)]) for i in idx[0]]
    nh = weights.shape[0]
    fig, axes = plt.subplots(1, nh, figsize=(2.6 * nh, 3.0), squeeze=False, layout="constrained")
    for head, ax in enumerate(axes[0]):
        ax.imshow(weights[head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].set_ylabel("query position")
    fig.supxlabel("key position (attended to)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=os.path.join("docs", "images"))
    parser.add_argument("--ckpt", help="a trained checkpoint whose attention to draw")
    parser.add_argument("--prompt", default="8550", help="text (or task digits) to run through the model")
    parser.add_argument("--layer", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    print("block graph:", draw_block_graph(os.path.join(args.out_dir, "block_graph.svg")))
    if args.ckpt:
        print("attention map:", draw_attention_map(args.ckpt, args.prompt, args.layer,
                                                   os.path.join(args.out_dir, "attention_map.png")))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, OSError) as error:  # bad input: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

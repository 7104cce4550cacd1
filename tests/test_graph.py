"""Tests for graph.py: the DOT picture of the autograd graph holds every op and edge."""

import re
import shutil

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt.graph import render, to_dot


def _small_graph():
    x = tg.Tensor(np.ones((2, 3)))  # data: no gradient (a float64 array stays float64)
    w = tg.Tensor(np.ones((3, 4)), requires_grad=True)
    loss = (x @ w).tanh().sum()
    return x, w, loss


def test_to_dot_has_one_node_per_op_and_the_forward_edges():
    x, w, loss = _small_graph()
    dot = to_dot(loss, params={"weight": w})
    ops = re.findall(r'label="([A-Za-z]+)"\];', dot)
    assert sorted(ops) == ["MatMulOp", "SumOp", "TanhOp"]
    assert 'label="weight\\n(3, 4)"' in dot  # the parameter is named
    assert 'label="input (2, 3)\\nfloat64"' in dot  # the data leaf is marked as input
    # 3 ops: MatMul has 2 inputs + 1 output, Tanh and Sum 1 + 1 each.
    assert len(re.findall(r" -> ", dot)) == 7
    assert f"t{id(w)} -> f{id(loss._ctx.parents[0]._ctx.parents[0]._ctx)}" in dot


def test_to_dot_refuses_a_freed_graph_and_an_oversized_one():
    _, _, loss = _small_graph()
    with pytest.raises(ValueError, match="max_nodes=2"):
        to_dot(loss, max_nodes=2)
    loss.backward()
    with pytest.raises(ValueError, match="already freed"):
        to_dot(loss)


def test_render_writes_dot_text_and_refuses_unknown_extensions(tmp_path):
    _, _, loss = _small_graph()
    dot = to_dot(loss)
    path = render(dot, str(tmp_path / "g.dot"))
    assert open(path, encoding="utf-8").read() == dot
    with pytest.raises(ValueError, match=r"\.dot, \.svg"):
        render(dot, str(tmp_path / "g.jpg"))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_render_svg_through_graphviz(tmp_path):
    _, _, loss = _small_graph()
    path = render(to_dot(loss), str(tmp_path / "g.svg"))
    svg = open(path, encoding="utf-8").read()
    assert "<svg" in svg and "MatMul" in svg

"""Draw the autograd graph: what `backward()` will walk, as a picture.

Every op applied to tensors that need a gradient leaves a node in the graph
(`Tensor._ctx`, a `Function` holding its inputs as `parents`). `to_dot` walks
that graph from one tensor back to the leaves and writes it in Graphviz's DOT
language: tensors are boxes (name or shape, dtype), ops are ellipses (the
`Function` class), and an arrow runs from each input to the op that used it
and from the op to its output, the direction of the forward pass. Backward
runs the arrows the other way.

    loss = ...                                        # before loss.backward()
    dot = to_dot(loss, params=dict(model.named_parameters()))
    render(dot, "graph.svg")                          # needs Graphviz's `dot`

Draw the graph before calling `backward()`: backward frees it as it goes.
"""

import os
import shutil
import subprocess

# Colors that tell the kinds of node apart in the picture.
_PARAMETER_COLOR = "#cfe8ff"  # leaves with a name: the weights being learnt
_INPUT_COLOR = "#eeeeee"  # leaves without a gradient: data, masks, constants
_OP_COLOR = "#ffe9c7"


def to_dot(root, params=None, max_nodes=5000):
    """The DOT source of the graph that produced `root` (a Tensor).

    `params` maps names to tensors (e.g. `dict(model.named_parameters())`) so
    the leaves that are parameters show their names. A graph with more than
    `max_nodes` ops is refused rather than drawn unreadably large.
    """
    names = {id(t): name for name, t in (params or {}).items()}
    lines = ["digraph autograd {", "  rankdir=BT;", '  node [fontname="Helvetica", fontsize=10];']
    seen_tensors, seen_ops = set(), set()

    def tensor_node(t):
        key = f"t{id(t)}"
        if id(t) not in seen_tensors:
            seen_tensors.add(id(t))
            shape = "(" + ", ".join(str(n) for n in t.shape) + ")"
            if id(t) in names:
                label, color = f"{names[id(t)]}\\n{shape}", _PARAMETER_COLOR
            elif t._ctx is None and not t.requires_grad:
                label, color = f"input {shape}\\n{t.dtype}", _INPUT_COLOR
            else:
                label, color = f"{shape}\\n{t.dtype}", "white"
            lines.append(f'  {key} [shape=box, style=filled, fillcolor="{color}", label="{label}"];')
        return key

    stack = [root]
    tensor_node(root)
    while stack:
        t = stack.pop()
        ctx = t._ctx
        if ctx is None or id(ctx) in seen_ops:
            continue
        if ctx.parents is None:
            raise ValueError("to_dot: the graph was already freed by backward(); draw it before calling backward()")
        seen_ops.add(id(ctx))
        if len(seen_ops) > max_nodes:
            raise ValueError(f"to_dot: the graph has more than max_nodes={max_nodes} ops; draw a smaller part")
        op = f"f{id(ctx)}"
        lines.append(f'  {op} [shape=ellipse, style=filled, fillcolor="{_OP_COLOR}", label="{type(ctx).__name__}"];')
        lines.append(f"  {op} -> {tensor_node(t)};")
        for parent in ctx.parents:
            lines.append(f"  {tensor_node(parent)} -> {op};")
            stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_source, path):
    """Write `dot_source` to `path`: `.dot` as text, `.svg`/`.png`/`.pdf` through Graphviz's `dot`.

    Raises FileNotFoundError when an image is asked for and `dot` is not
    installed (Debian: `apt-get install graphviz`); the `.dot` text needs nothing.
    """
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension == "dot":
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot_source)
        return path
    if extension not in ("svg", "png", "pdf"):
        raise ValueError(f"render: cannot write {path!r}; the extension must be .dot, .svg, .png or .pdf")
    dot = shutil.which("dot")
    if dot is None:
        raise FileNotFoundError(
            f"render: writing {path} needs Graphviz's `dot` program, which is not installed "
            "(apt-get install graphviz); write a .dot file instead"
        )
    subprocess.run([dot, f"-T{extension}", "-o", path], input=dot_source, text=True, check=True,
                   capture_output=True)
    return path

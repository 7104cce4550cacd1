"""LoRA: a frozen linear layer plus a trainable low-rank correction, as one op.

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models": instead
of changing a weight W (out, in) during fine-tuning, learn a change of rank r,

    y = x W^T + b + scale * (x A^T) B^T,      scale = alpha / r,

with A (r, in) and B (out, r). Only A and B train: r * (in + out) numbers
instead of out * in. B starts at zero, so the adapted layer starts out exactly
as the pretrained one. The product B A is never formed: x A^T is (N, r), small,
and the correction costs two thin matmuls.
"""

from .. import kernels
from ..tensor import Function


class LoRALinearOp(Function):
    """y = x @ weight^T + bias + scale * (x @ lora_A^T) @ lora_B^T.

    x (..., in), weight (out, in), lora_A (r, in), lora_B (out, r), bias (out,)
    or absent; `scale` is the keyword option alpha / r. Usually weight and bias
    need no gradient (they are frozen) and the backward skips their products.
    """

    def forward(self, x, weight, lora_A, lora_B, *bias, scale):
        for name, array in (("weight", weight), ("lora_A", lora_A), ("lora_B", lora_B), ("bias", bias[0] if bias else x)):
            if array.dtype != x.dtype:
                raise TypeError(f"lora_linear: input is {x.dtype} but {name} is {array.dtype}; convert one first")
        out_features, in_features = weight.shape
        rank = lora_A.shape[0]
        if x.shape[-1] != in_features or lora_A.shape != (rank, in_features) or lora_B.shape != (out_features, rank):
            raise ValueError(
                f"lora_linear: input (..., {x.shape[-1]}), weight {weight.shape}, lora_A {lora_A.shape} and "
                f"lora_B {lora_B.shape} do not fit together; expected lora_A (r, {in_features}) and "
                f"lora_B ({out_features}, r)"
            )
        if bias and bias[0].shape != (out_features,):
            raise ValueError(f"lora_linear: bias {bias[0].shape} does not match weight {weight.shape}")
        self.x_shape = x.shape
        self.x = x.reshape(-1, in_features)  # (N, in)
        self.weight, self.lora_A, self.lora_B, self.has_bias = weight, lora_A, lora_B, bool(bias)
        self.scale = x.dtype.type(scale)  # a NumPy scalar of x's dtype, so the products keep it
        self.h = kernels.matmul(self.x, lora_A.T)  # (N, r): cached, both dB and the forward use it
        y = kernels.matmul(self.x, weight.T)  # (N, out)
        y += self.scale * kernels.matmul(self.h, lora_B.T)  # (N, out)
        if bias:
            y += bias[0]
        return y.reshape(x.shape[:-1] + (out_features,))  # (..., out)

    def backward(self, grad):
        # y = x W^T + b + s h B^T, with h = x A^T  =>
        #   dh = s dy B                      (N, r), the gradient reaching the bottleneck
        #   dx = dy W + dh A                 (N, in): through W, and through A
        #   dW = dy^T x                      (out, in), as for a plain linear layer
        #   dA = dh^T x                      (r, in)
        #   dB = s dy^T h                    (out, r)
        #   db = sum_n dy_n                  (out,)
        dy = grad.reshape(-1, grad.shape[-1])  # (N, out)
        need_x, need_w, need_a, need_b = self.needs_input_grad[:4]
        dx = dw = da = db = None
        if need_x or need_a:
            dh = self.scale * kernels.matmul(dy, self.lora_B)  # (N, r)
        if need_x:
            dx = kernels.matmul(dy, self.weight) + kernels.matmul(dh, self.lora_A)  # (N, in)
            dx = dx.reshape(self.x_shape)  # (..., in)
        if need_w:
            dw = kernels.matmul(dy.T, self.x)  # (out, in)
        if need_a:
            da = kernels.matmul(dh.T, self.x)  # (r, in)
        if need_b:
            db = self.scale * kernels.matmul(dy.T, self.h)  # (out, r)
        if self.has_bias:
            dbias = dy.sum(axis=0) if self.needs_input_grad[4] else None  # (out,)
            return dx, dw, da, db, dbias
        return dx, dw, da, db

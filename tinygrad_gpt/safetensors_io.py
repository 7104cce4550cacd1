"""Reading .safetensors files, tensor by tensor, with the safetensors package's NumPy API.

A .safetensors file is three parts: 8 bytes holding N, a little-endian unsigned 64-bit
integer; N bytes of JSON giving each tensor's dtype, shape and [begin, end) byte offsets
into the data (and an optional "__metadata__" dict of strings); then the raw data, every
tensor row-major and little-endian. Nothing in it is code, which is why it replaced
PyTorch's pickled files: loading a stranger's weights cannot run a stranger's program.

The safetensors package parses and checks the header (offsets in bounds, no overlaps, a
file that is not cut short) and hands out NumPy arrays. NumPy has no bfloat16, so BF16
tensors are widened here to float32: a bfloat16 is the top 16 bits of a float32, so
shifting its bits left by 16 gives the same number exactly.
"""

import os

import numpy as np
import safetensors
from safetensors import safe_open

# The dtypes a checkpoint of floating-point weights may hold, by their safetensors names.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class SafetensorsFile:
    """An open .safetensors file: its tensor names and shapes, and each tensor on request.

        with SafetensorsFile("model.safetensors") as f:
            for name in f.keys():
                array = f.get_tensor(name)   # float16/32/64; BF16 comes back as float32

    Every error (a missing, truncated or corrupt file, a dtype other than a float) is a
    ValueError or FileNotFoundError of one sentence that names the file.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None
        self._bf16_data = None  # name -> bytes, read on the first BF16 request

    def __enter__(self):
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._file = safe_open(self.path, framework="numpy").__enter__()
            names = list(self._file.keys())
            slices = {name: self._file.get_slice(name) for name in names}
            self.dtypes = {name: s.get_dtype() for name, s in slices.items()}
            self.shapes = {name: tuple(s.get_shape()) for name, s in slices.items()}
        except safetensors.SafetensorError as error:
            raise ValueError(f"{self.path} is not a valid safetensors file ({error})") from None
        for name, dtype in self.dtypes.items():
            if dtype not in FLOAT_DTYPES:
                raise ValueError(
                    f"{self.path}: tensor {name} has dtype {dtype}; weights must be one of {', '.join(FLOAT_DTYPES)}"
                )
        return self

    def __exit__(self, *exc_info):
        self._file.__exit__(*exc_info)
        self._bf16_data = None

    def keys(self):
        return list(self.dtypes)

    def metadata(self):
        """The header's "__metadata__" (a dict of strings), or None."""
        return self._file.metadata()

    def get_tensor(self, name):
        """The tensor `name` as a NumPy array of its own dtype (BF16: float32)."""
        try:
            if self.dtypes[name] != "BF16":
                return self._file.get_tensor(name)
            if self._bf16_data is None:
                # safe_open's NumPy API cannot return a dtype NumPy lacks; the package's
                # deserialize gives the raw bytes of every tensor of the file at once.
                with open(self.path, "rb") as f:
                    self._bf16_data = {n: t["data"] for n, t in safetensors.deserialize(f.read())}
        except safetensors.SafetensorError as error:
            raise ValueError(f"{self.path}: tensor {name} cannot be read ({error})") from None
        bits = np.frombuffer(self._bf16_data[name], dtype="<u2")  # (n,) the bfloat16 bit patterns
        widened = bits.astype(np.uint32) << 16  # (n,) the same numbers as float32 bit patterns
        return widened.view(np.float32).reshape(self.shapes[name])

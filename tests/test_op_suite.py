"""The op suite of `tests/op_suite.py` on every backend: float64 central differences on the CPU, and on CUDA (numba's
simulator when there is no GPU) the same outputs and gradients as the CPU. A backend that lacks a primitive fails
here with an error naming it."""
import numpy as np
import pytest

from minidl.autograd import gradcheck
from .op_suite import OPS, inputs, same_as_cpu


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op(name, device):
    fn, shapes = OPS[name]
    if device == "cpu": assert gradcheck(fn, inputs(shapes, "cpu"))
    else: same_as_cpu(fn, *shapes)


def test_matmul_in_float32_matches_the_cpu():
    for fn, shapes in (v for k, v in OPS.items() if k.startswith("matmul")):
        same_as_cpu(fn, *shapes, rtol=2e-5, dtype=np.float32)

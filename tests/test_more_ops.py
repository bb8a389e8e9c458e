"""Lesson 05b's ops against PyTorch when it is installed (values, dtypes and gradients), else against NumPy (values)
and float64 central differences (gradients, in `tests/op_suite.py`)."""
import math

import numpy as np
import pytest

import minidl

try: import torch
except ImportError: torch = None

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5))
X[0, 1, 2] = X[0, 1, 3]                                     # a tie
SPECIAL = np.array([[2.0, np.nan, -1.5, 2.0, np.inf], [0.0, -np.inf, 0.5, 0.0, -2.5]])
INTS = np.array([[7, -7, 0, 3], [2, 2, -5, 9]])

# name: (input, minidl function, torch function (None: same as minidl's), NumPy reference)
CASES = {
    "tan": (X, lambda x: x.tan(), None, np.tan),
    "sinh": (X, lambda x: minidl.sinh(x), lambda x: torch.sinh(x), np.sinh),
    "cosh": (X, lambda x: x.cosh(), None, np.cosh),
    "asin": (X / 4, lambda x: x.asin(), None, np.arcsin),
    "acos": (X / 4, lambda x: x.arccos(), None, np.arccos),
    "atan": (X, lambda x: x.atan(), None, np.arctan),
    "log2": (np.abs(X) + 0.1, lambda x: x.log2(), None, np.log2),
    "log10": (np.abs(X) + 0.1, lambda x: x.log10(), None, np.log10),
    "expm1": (X, lambda x: x.expm1(), None, np.expm1),
    "floor": (X * 3, lambda x: x.floor(), None, np.floor),
    "ceil": (X * 3, lambda x: x.ceil(), None, np.ceil),
    "trunc": (X * 3, lambda x: x.trunc(), None, np.trunc),
    "round halves": (np.arange(-6, 7) / 2, lambda x: x.round(), None, np.rint),
    "floor of ints keeps the dtype": (INTS, lambda x: x.floor(), None, lambda a: a),
    "floor_divide floats": (X * 5, lambda x: x // 1.5, None, lambda a: a // 1.5),
    "floor_divide ints": (INTS, lambda x: x // 3, None, lambda a: a // 3),
    "remainder ints": (INTS, lambda x: x % -3, None, lambda a: a % -3),
    "remainder floats": (X * 5, lambda x: x % 1.5, None, lambda a: a % 1.5),
    "rfloordiv and rmod": (INTS + 20, lambda x: 100 // x + 100 % x, None, lambda a: 100 // a + 100 % a),
    "isnan": (SPECIAL, lambda x: x.isnan(), None, np.isnan),
    "isinf": (SPECIAL, lambda x: x.isinf(), None, np.isinf),
    "isfinite": (SPECIAL, lambda x: x.isfinite(), None, np.isfinite),
    "nan_to_num": (SPECIAL, lambda x: x.nan_to_num(), None, np.nan_to_num),
    "nan_to_num values": (SPECIAL, lambda x: x.nan_to_num(1.0, 5.0, -5.0), None, lambda a: np.nan_to_num(a, nan=1.0, posinf=5.0, neginf=-5.0)),
    "isclose": (SPECIAL, lambda x: x.isclose(x * (1 + 1e-7), equal_nan=True), None, lambda a: np.isclose(a, a * (1 + 1e-7), equal_nan=True)),
    "all dim": (INTS, lambda x: x.all(1), None, lambda a: a.all(1)),
    "any keepdim": (INTS, lambda x: x.any(0, keepdim=True), None, lambda a: a.any(0, keepdims=True)),
    "all of everything": (INTS, lambda x: minidl.all(x), lambda x: torch.all(x), lambda a: a.all()),
    "amax dims": (X, lambda x: x.amax((0, 2)), None, lambda a: a.max((0, 2))),
    "amin keepdim": (X, lambda x: x.amin(1, keepdim=True), None, lambda a: a.min(1, keepdims=True)),
    "amax with a NaN": (SPECIAL, lambda x: x.amax(1), None, lambda a: a.max(1)),
    "cumsum": (X, lambda x: x.cumsum(1), None, lambda a: np.cumsum(a, 1)),
    "cumsum of bools": (INTS > 0, lambda x: x.cumsum(-1), None, lambda a: np.cumsum(a, -1)),
    "cumprod": (X, lambda x: x.cumprod(2), None, lambda a: np.cumprod(a, 2)),
    "cumprod with zeros": (np.array([[2.0, 0.0, 3.0, 0.0, 5.0], [0.0, 1.5, -2.0, 4.0, 0.5]]), lambda x: x.cumprod(1), None, lambda a: np.cumprod(a, 1)),
    "flip": (X, lambda x: x.flip((0, 2)), lambda x: x.flip((0, 2)), lambda a: np.flip(a, (0, 2))),
    "sort": (X, lambda x: x.sort(1).values, None, lambda a: np.sort(a, 1)),
    "sort descending with NaN": (SPECIAL, lambda x: x.sort(1, descending=True).values, None, lambda a: np.flip(np.sort(a, 1), 1)),
    "sort indices are stable": (np.array([3, 1, 3, 1, 2]), lambda x: x.sort(stable=True).indices, None, lambda a: np.argsort(a, kind="stable")),
    "argsort descending": (X, lambda x: x.argsort(0, descending=True), None, lambda a: np.argsort(-a, 0, kind="stable")),
    "topk": (X, lambda x: x.topk(3, dim=2).values, None, lambda a: -np.sort(-a, 2)[..., :3]),
    "topk smallest": (X, lambda x: x.topk(2, dim=0, largest=False).values, None, lambda a: np.sort(a, 0)[:2]),
    "median": (X, lambda x: x.median(), None, lambda a: np.sort(a.ravel())[(a.size - 1) // 2]),
    "median dim": (X, lambda x: x.median(2).values, None, lambda a: np.sort(a, 2)[..., 2]),
    "median with NaN": (SPECIAL, lambda x: x.median(1).values, None, lambda a: np.array([np.nan, np.sort(a[1])[2]])),
    "tril": (X, lambda x: x.tril(), None, lambda a: np.tril(a)),
    "triu diagonal": (X, lambda x: x.triu(-1), None, lambda a: np.triu(a, -1)),
    "masked_fill": (X, lambda x: x.masked_fill(x > 0.5, -math.inf), None, lambda a: np.where(a > 0.5, -np.inf, a)),
    "masked_fill broadcast mask": (X, lambda x: x.masked_fill(minidl.tensor([True, False, True, False, False]), 0.0),
                                   lambda x: x.masked_fill(torch.tensor([True, False, True, False, False]), 0.0), lambda a: a * [0, 1, 0, 1, 1]),
    "repeat": (X[0], lambda x: x.repeat(2, 1, 3), None, lambda a: np.tile(a, (2, 1, 3))),
    "repeat_interleave": (X, lambda x: x.repeat_interleave(2, dim=1), None, lambda a: np.repeat(a, 2, 1)),
    "repeat_interleave flat": (INTS, lambda x: x.repeat_interleave(3), None, lambda a: np.repeat(a, 3)),
    "roll": (X, lambda x: x.roll((1, -2), (0, 2)), None, lambda a: np.roll(a, (1, -2), (0, 2))),
    "roll flat": (X, lambda x: x.roll(7), None, lambda a: np.roll(a, 7)),
    "narrow": (X, lambda x: x.narrow(2, 1, 3), None, lambda a: a[:, :, 1:4]),
    "narrow negative start": (X, lambda x: x.narrow(-1, -2, 2), None, lambda a: a[..., -2:]),
    "index_select": (X, lambda x: x.index_select(1, minidl.tensor([3, 0, 3])), lambda x: x.index_select(1, torch.tensor([3, 0, 3])), lambda a: a[:, [3, 0, 3]]),
    "t": (X[0], lambda x: x.t(), None, lambda a: a.T),
    "outer": (X[0, 0], lambda x: minidl.outer(x, x * 2), lambda x: torch.outer(x, x * 2), lambda a: np.outer(a, a * 2)),
    "bmm": (X, lambda x: x.bmm(x.transpose(1, 2)), None, lambda a: a @ a.transpose(0, 2, 1)),
    "baddbmm": (X, lambda x: minidl.baddbmm(x[:, :, :4], x, x[:, :1].transpose(1, 2).expand(3, 5, 4), beta=0.5, alpha=2),
                lambda x: torch.baddbmm(x[:, :, :4], x, x[:, :1].transpose(1, 2).expand(3, 5, 4), beta=0.5, alpha=2),
                lambda a: 0.5 * a[:, :, :4] + 2 * (a @ np.broadcast_to(a[:, :1].transpose(0, 2, 1), (3, 5, 4)))),
    "addmm": (X[0], lambda x: minidl.addmm(x[:, :4], x, x[:1].t().expand(5, 4), alpha=3),
              lambda x: torch.addmm(x[:, :4], x, x[:1].t().expand(5, 4), alpha=3), lambda a: a[:, :4] + 3 * (a @ np.broadcast_to(a[:1].T, (5, 4)))),
}


def _as_numpy(t): return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values(name):
    a, fn, tfn, ref = CASES[name]
    got = fn(minidl.tensor(a))
    np.testing.assert_allclose(_as_numpy(got), ref(a), rtol=1e-12, atol=1e-12, equal_nan=True)
    if torch is not None:
        want = (tfn or fn)(torch.tensor(a))
        np.testing.assert_allclose(_as_numpy(got), want.numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
        assert str(got.dtype) == str(want.dtype).removeprefix("torch."), (got.dtype, want.dtype)


@pytest.mark.skipif(torch is None, reason="the gradients are compared with PyTorch's; tests/op_suite.py checks them by central differences")
@pytest.mark.parametrize("name", sorted(k for k, (a, *_) in CASES.items() if np.asarray(a).dtype.kind == "f"))
def test_gradients_match_pytorch(name):
    a, fn, tfn, _ = CASES[name]
    x, tx = minidl.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, tout = fn(x), (tfn or fn)(tx)
    if not out.requires_grad:
        # PyTorch records floor division but its backward raises "not implemented": neither has a gradient
        assert not tout.requires_grad or type(tout.grad_fn).__name__ == "NotImplemented"; return
    w = np.random.default_rng(1).standard_normal(out.shape)
    (out * minidl.tensor(w)).nan_to_num().sum().backward()          # NaN outputs must not hide the other gradients
    (tout * torch.tensor(w)).nan_to_num().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12, equal_nan=True)


def test_errors_say_what_was_wrong():
    x = minidl.arange(6).reshape(2, 3)
    with pytest.raises(ZeroDivisionError, match="division by zero"): x // minidl.tensor([1, 0, 1])
    with pytest.raises(RuntimeError, match=r"k \(4\) is out of range"): x.topk(4)
    with pytest.raises(IndexError, match="exceeds dimension size"): x.narrow(1, 2, 2)
    with pytest.raises(IndexError, match="out of range for dimension 1"): x.index_select(1, minidl.tensor([3]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"): x.masked_fill(x, 0)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"): minidl.arange(3).tril()
    with pytest.raises(RuntimeError, match="can't be smaller than the number of dims"): x.repeat(2)
    with pytest.raises(RuntimeError, match=r"t\(\) expects a tensor with <= 2 dimensions"): x.reshape(1, 2, 3).t()
    with pytest.raises(RuntimeError, match="batch1 and batch2 must be 3-d"): minidl.bmm(x, x)


def test_meshgrid_matches_numpy_both_ways():
    a, b, c = minidl.arange(3), minidl.arange(4), minidl.arange(2)
    for indexing in ("ij", "xy"):
        for got, want in zip(minidl.meshgrid(a, b, c, indexing=indexing), np.meshgrid(np.arange(3), np.arange(4), np.arange(2), indexing=indexing)):
            np.testing.assert_array_equal(got.numpy(), want)


def test_allclose_and_in_place_masked_fill():
    assert minidl.allclose(minidl.tensor([1.0, math.inf]), minidl.tensor([1.0 + 1e-9, math.inf]))
    assert not minidl.allclose(minidl.tensor([math.nan]), minidl.tensor([math.nan]))
    x = minidl.zeros(2, 2)
    assert x.masked_fill_(minidl.eye(2) == 1, 5.0) is x and x.tolist() == [[5.0, 0.0], [0.0, 5.0]]


REPRS = {(1.5, 2.0): "tensor([1.5000, 2.0000])", (1.0, 2.0): "tensor([1., 2.])", (0.0, 0.0): "tensor([0., 0.])",
         (1e-5, 1.0): "tensor([1.0000e-05, 1.0000e+00])", (math.nan, 1.5, math.inf): "tensor([   nan, 1.5000,    inf])",
         ((1.5, -2.25), (3.0, 4.0)): "tensor([[ 1.5000, -2.2500],\n        [ 3.0000,  4.0000]])", 3.25: "tensor(3.2500)",
         (123456789.0, 1.0): "tensor([1.2346e+08, 1.0000e+00])", (-1.0, 0.5): "tensor([-1.0000,  0.5000])"}


@pytest.mark.parametrize("values", list(REPRS), ids=list(REPRS.values()))
def test_tensors_print_as_pytorch_prints_them(values):
    assert repr(minidl.tensor(values)) == REPRS[values]
    if torch is not None: assert repr(torch.tensor(values)) == REPRS[values]

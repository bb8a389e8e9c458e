"""Property-based fuzzing of the common ops, forward and backward: float32 and float64; contiguous, transposed, strided,
broadcast and zero-size inputs; NaN and ±inf values. The reference is PyTorch when it is installed, else NumPy
(forward values, and gradients by float64 central differences where the inputs are finite)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import minidl
import minidl.nn.functional as F

try: import torch
except ImportError: torch = None

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")       # NaN and inf are the point here
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# name: (minidl function, torch function, NumPy function, whether inputs must be positive)
UNARY = {
    "exp": (lambda x: x.exp(), lambda x: x.exp(), np.exp, False),
    "log": (lambda x: x.log(), lambda x: x.log(), np.log, True),
    "sqrt": (lambda x: x.sqrt(), lambda x: x.sqrt(), np.sqrt, True),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), np.tanh, False),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), False),
    "relu": (lambda x: F.relu(x), lambda x: torch.relu(x), lambda a: np.where(a <= 0, 0, a).astype(a.dtype), False),
    "abs": (lambda x: x.abs(), lambda x: x.abs(), np.abs, False),
    "neg": (lambda x: -x, lambda x: -x, np.negative, False),
    "sin": (lambda x: x.sin(), lambda x: x.sin(), np.sin, False),
    "square": (lambda x: x * x, lambda x: x * x, np.square, False),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), lambda x: x.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), False),
}
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, lambda a, b: a / b, np.divide),
    "maximum": (minidl.maximum, lambda a, b: torch.maximum(a, b), np.maximum),
    "minimum": (minidl.minimum, lambda a, b: torch.minimum(a, b), np.minimum),
}
def _np_log_softmax(a):
    m = np.max(a, -1, keepdims=True, initial=-np.inf)
    return a - m - np.log(np.exp(a - m).sum(-1, keepdims=True))

ROWS = {
    "sum": (lambda x: x.sum(-1), lambda x: x.sum(-1), lambda a: a.sum(-1)),
    "mean": (lambda x: x.mean(0), lambda x: x.mean(0), lambda a: a.mean(0)),
    "softmax": (lambda x: x.softmax(-1), lambda x: x.softmax(-1), lambda a: np.exp(_np_log_softmax(a))),
    "log_softmax": (lambda x: x.log_softmax(-1), lambda x: x.log_softmax(-1), _np_log_softmax),
    "logsumexp": (lambda x: x.logsumexp(0), lambda x: x.logsumexp(0), lambda a: np.log(np.exp(a).sum(0))),
    "max dim": (lambda x: x.max(-1)[0], lambda x: x.max(-1)[0], lambda a: a.max(-1)),
}

SPECIAL = [np.nan, np.inf, -np.inf]


@st.composite
def arrays(draw, min_dims=1, max_dims=3, positive=False, special=True, min_side=0):
    "A float array, the dtype, and how to lay it out: (values, layout)."
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = tuple(draw(st.lists(st.integers(min_side, 4), min_size=min_dims, max_size=max_dims)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.uniform(0.1 if positive else -3, 3, shape)
    if special and a.size and draw(st.booleans()):
        flat = a.reshape(-1)
        for i in rng.choice(a.size, min(a.size, draw(st.integers(1, 3))), replace=False): flat[i] = rng.choice(SPECIAL)
    return a.astype(dtype), draw(st.sampled_from(["contiguous", "transposed", "strided"]))


def _layout(x, layout):
    "The same values as a transposed or strided view (minidl or torch tensors alike)."
    if layout == "transposed" and x.ndim >= 2: return x.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "strided": return x.unsqueeze(-1).expand(*x.shape, 2)[..., 0]
    return x


def _both(a, layout):
    "minidl and torch leaves with the same values and layout."
    m = minidl.tensor(a, requires_grad=True)
    t = torch.tensor(a, requires_grad=True) if torch is not None else None
    return m, t, _layout(m, layout), (_layout(t, layout) if t is not None else None)


def _close(got, want, dtype, what):
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True, err_msg=what)


def _check(fn_md, fn_torch, fn_np, inputs, layouts, name):
    dtype = inputs[0].dtype
    pairs = [_both(a, l) for a, l in zip(inputs, layouts)]
    out = fn_md(*[p[2] for p in pairs])
    if torch is not None:
        ref = fn_torch(*[p[3] for p in pairs])
        _close(out.detach().numpy(), ref.detach().numpy(), dtype, f"{name} forward")
        if ref.numel():
            w = np.random.default_rng(0).standard_normal(tuple(ref.shape)).astype(dtype)
            (out * minidl.tensor(w)).sum().backward(); (ref * torch.tensor(w)).sum().backward()
            for (m, t, _, _), i in zip(pairs, range(len(pairs))):
                tg = t.grad.numpy() if t.grad is not None else np.zeros(t.shape, dtype)
                mg = m.grad.numpy() if m.grad is not None else np.zeros(m.shape, dtype)
                _close(mg, tg, dtype, f"{name} gradient of input {i}")
    else:
        with np.errstate(all="ignore"): want = fn_np(*inputs)
        _close(out.detach().numpy(), want, dtype, f"{name} forward")
        if all(np.isfinite(a).all() for a in inputs) and out.numel():
            x64 = [minidl.tensor(a.astype(np.float64), requires_grad=True) for a in inputs]
            assert minidl.autograd.gradcheck(lambda *xs: fn_md(*[_layout(x, l) for x, l in zip(xs, layouts)]), tuple(x64)), name


@FUZZ
@given(st.sampled_from(sorted(UNARY)), st.data())
def test_unary_ops(name, data):
    fm, ft, fn, positive = UNARY[name]
    a, layout = data.draw(arrays(positive=positive))
    _check(fm, ft, fn, [a], [layout], name)


@FUZZ
@given(st.sampled_from(sorted(BINARY)), st.data())
def test_binary_ops_with_broadcasting(name, data):
    fm, ft, fn = BINARY[name]
    a, la = data.draw(arrays(min_dims=2))
    keep = data.draw(st.lists(st.booleans(), min_size=a.ndim, max_size=a.ndim))
    shape_b = tuple(n if k else 1 for n, k in zip(a.shape, keep))[data.draw(st.integers(0, a.ndim - 1)):]      # broadcasts against a
    b = np.random.default_rng(1).uniform(0.5, 3, shape_b).astype(a.dtype)
    if name == "div": b = np.where(np.random.default_rng(2).random(shape_b) < 0.5, b, -b).astype(a.dtype)
    _check(fm, ft, fn, [a, b], [la, "contiguous"], name)


@FUZZ
@given(st.sampled_from(sorted(ROWS)), st.data())
def test_row_ops(name, data):
    fm, ft, fn = ROWS[name]
    a, layout = data.draw(arrays(min_dims=2, max_dims=2, min_side=1 if name == "max dim" else 0))
    _check(fm, ft, fn, [a], [layout], name)


@FUZZ
@given(st.sampled_from([np.float32, np.float64]), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(1, 3), st.booleans())
def test_matmul(dtype, m, k, n, batch, transposed):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = rng.standard_normal((batch, m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    _check(lambda x, y: x @ y, lambda x, y: x @ y, np.matmul, [a, b], ["contiguous", "transposed" if transposed else "contiguous"], "matmul")


@FUZZ
@given(st.data())
def test_cross_entropy(data):
    a, layout = data.draw(arrays(min_dims=2, max_dims=2, min_side=1, special=False))
    t = np.random.default_rng(a.size).integers(0, a.shape[1], a.shape[0])
    if data.draw(st.booleans()): t[np.random.default_rng(1).random(a.shape[0]) < 0.5] = -100      # some ignored, maybe all
    fm = lambda x: F.cross_entropy(x, minidl.tensor(t))
    ft = lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(t))
    def fn(x):
        keep = t != -100
        ls = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
        return -ls[np.arange(len(t))[keep], t[keep]].mean() if keep.any() else np.array(np.nan, x.dtype)
    _check(fm, ft, fn, [a], [layout], "cross_entropy")

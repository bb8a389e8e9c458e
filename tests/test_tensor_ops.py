"""Property tests of the tensor layer: every op's forward against NumPy and its backward against float64
central differences, on random shapes with broadcasting, non-contiguous inputs, size-1 and zero-size dims."""
import gc
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minidl as md
from minidl.autograd import gradcheck, gradgradcheck
from minidl.tensor import Tensor

SETTINGS = settings(max_examples=25, deadline=None)


def t64(a, requires_grad=True):
    return md.tensor(np.asarray(a, np.float64), dtype="float64", requires_grad=requires_grad)


def arrays(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, allow_nan=False, width=64))


@st.composite
def broadcast_pair(draw):
    "Two arrays whose shapes broadcast (size-1, missing and zero-size dims included)."
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    other = list(shape)
    for i in range(len(other)):
        if draw(st.booleans()): other[i] = 1
    other = tuple(other[draw(st.integers(0, len(other))):])
    return draw(arrays(shape)), draw(arrays(other))


@st.composite
def maybe_transposed(draw, min_dims=1):
    "An array, sometimes handed over as a non-contiguous (transposed or strided) view."
    a = draw(arrays(draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))))
    kind = draw(st.sampled_from(["plain", "transposed", "strided"]))
    if kind == "transposed": return np.ascontiguousarray(a.T).T
    if kind == "strided": return np.repeat(a, 2, axis=-1)[..., ::2]
    return a


BINARY = {"add": (lambda a, b: a + b, np.add), "sub": (lambda a, b: a - b, np.subtract),
          "mul": (lambda a, b: a * b, np.multiply), "div": (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
          "maximum": (md.maximum, np.maximum), "minimum": (md.minimum, np.minimum)}


@pytest.mark.parametrize("name", BINARY)
@SETTINGS
@given(pair=broadcast_pair())
def test_binary_ops_forward_and_backward(name, pair):
    f, ref = BINARY[name]
    a, b = pair
    np.testing.assert_allclose(f(t64(a), t64(b))._a, ref(a, b), rtol=1e-12)
    if name in ("maximum", "minimum") and np.any(np.isclose(*np.broadcast_arrays(a, b), atol=1e-5)): return  # kinks
    assert gradcheck(f, (t64(a), t64(b)))


UNARY = {"exp": (md.exp, np.exp), "tanh": (md.tanh, np.tanh), "sigmoid": (md.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
         "sin": (md.sin, np.sin), "gelu": (md.gelu, lambda a: a * 0.5 * (1 + np.vectorize(math.erf, otypes=[float])(a / math.sqrt(2)))),
         "silu": (md.silu, lambda a: a / (1 + np.exp(-a))), "softplus": (md.softplus, lambda a: np.log1p(np.exp(a))),
         "square": (lambda x: x ** 2, np.square), "softmax": (md.softmax, lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
         "log_softmax": (md.log_softmax, lambda a: a - np.log(np.exp(a).sum(-1, keepdims=True)))}


@pytest.mark.parametrize("name", UNARY)
@SETTINGS
@given(a=maybe_transposed())
def test_unary_ops_on_any_layout(name, a):
    f, ref = UNARY[name]
    np.testing.assert_allclose(f(t64(a))._a, ref(a), rtol=1e-10, atol=1e-12)
    assert gradcheck(f, t64(a))


@SETTINGS
@given(a=maybe_transposed(), data=st.data())
def test_reductions_over_any_axes(a, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, a.ndim - 1), max_size=a.ndim))))
    keepdim = data.draw(st.booleans())
    x = t64(a)
    np.testing.assert_allclose(x.sum(axes, keepdim)._a, a.sum(axes, keepdims=keepdim), atol=1e-12)
    np.testing.assert_allclose(x.mean(axes, keepdim)._a, a.mean(axes, keepdims=keepdim), atol=1e-12)
    assert gradcheck(lambda x: x.sum(axes, keepdim), x)
    assert gradcheck(lambda x: x.mean(axes, keepdim) * x.mean(), x)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=4))
def test_zero_size_dims(shape):
    a = np.zeros(shape)
    x = t64(a)
    np.testing.assert_array_equal(x.sum(0)._a, a.sum(0))
    assert (x * 2 + 1).shape == shape
    (x.exp() * 2).sum().backward()
    assert x.grad.shape == shape


@SETTINGS
@given(m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4), batch=st.sampled_from([(), (2,), (1, 3)]))
def test_matmul_batched(m, k, n, batch):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = rng.standard_normal(batch + (m, k)), rng.standard_normal((k, n))
    np.testing.assert_allclose((t64(a) @ t64(b))._a, a @ b, rtol=1e-12)
    assert gradcheck(lambda a, b: a @ b, (t64(a), t64(b)))


def test_second_derivatives_of_a_small_network():
    rng = np.random.default_rng(0)
    x, w = t64(rng.standard_normal((4, 3))), t64(rng.standard_normal((3, 2)))
    assert gradgradcheck(lambda x, w: (x @ w).tanh().softmax(-1).log().sum(1), (x, w))
    # d2/dx2 of x^3 at 2 is 12
    z = md.tensor([2.0], dtype="float64", requires_grad=True)
    (g,) = md.autograd.grad((z ** 3).sum(), z, create_graph=True)
    (h,) = md.autograd.grad(g.sum(), z)
    assert h.item() == pytest.approx(12.0)


def test_gelu_in_float32_over_its_whole_range_and_its_second_derivative():
    "The float32 kernels (erfc32, gelu_grad from the forward's Φ) agree with float64 erfc, relatively, out to the far negative tail."
    x = np.linspace(-12, 12, 24001).astype(np.float32)
    xt = md.tensor(x, requires_grad=True)
    y = md.gelu(xt)
    y.backward(md.ones_like(y))
    x64 = x.astype(np.float64)
    # float64 functions of the float32-rounded arguments -x/√2 and -x²/2 (as PyTorch's float32 kernels get them too:
    # near x = -12 that rounding alone moves erfc by 1e-5)
    cdf = 0.5 * np.vectorize(math.erfc)((-x * np.float32(1 / math.sqrt(2))).astype(np.float64))
    pdf = np.exp((np.float32(-0.5) * x * x).astype(np.float64)) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(y.detach().numpy(), x64 * cdf, rtol=5e-6, atol=0)
    np.testing.assert_allclose(xt.grad.numpy(), cdf + x64 * pdf, rtol=5e-6, atol=1e-7)   # it crosses zero near x = -0.75
    z = md.tensor(np.linspace(-4, 4, 17), dtype="float64", requires_grad=True)
    (g,) = md.autograd.grad(md.gelu(z).sum(), z, create_graph=True)           # recorded: the tensor-op backward
    (h,) = md.autograd.grad(g.sum(), z)
    z64 = z.detach().numpy()
    np.testing.assert_allclose(h.numpy(), np.exp(-z64 ** 2 / 2) / math.sqrt(2 * math.pi) * (2 - z64 ** 2), rtol=1e-12, atol=1e-15)


def test_deep_chain_backprops_without_recursion():
    x = md.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000): y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000, rel=1e-3)


def test_repeated_backward_accumulates_like_pytorch():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3): (x * x).sum().backward()
    assert x.grad.tolist() == [6.0, 12.0]


def test_graphs_are_freed_after_many_steps():
    w = md.randn(8, 8, requires_grad=True)
    def live_tensors(): gc.collect(); return sum(type(o) is Tensor for o in gc.get_objects())
    for _ in range(5): (md.randn(4, 8) @ w).relu().sum().backward()
    before = live_tensors()
    for _ in range(200):
        (md.randn(4, 8) @ w).relu().sum().backward()
        w.grad = None
    assert live_tensors() <= before + 2


def test_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        md.ones(2, 3) * md.ones(4)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\) cannot be multiplied: 3 \(last dim of the first\) != 2"):
        md.ones(2, 3) @ md.ones(2, 3)
    with pytest.raises(RuntimeError, match="implicitly created only for scalar outputs"):
        (md.ones(2, requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        md.ones(2, requires_grad=True).mul_(2)
    with pytest.raises(TypeError, match="unsupported dtype complex64"):
        md.tensor([1, 2], dtype="complex64")
    with pytest.raises(RuntimeError, match="only floating point tensors can require gradients"):
        md.arange(3, requires_grad=True)


def test_float32_is_the_default_and_kept():
    x = md.randn(3, 3, requires_grad=True)
    y = (x @ x).softmax(-1).log().sum()
    y.backward()
    assert y.dtype == md.float32 and x.grad.dtype == md.float32


def test_pytorch_forms_and_errors_for_randint_repeated_dims_and_negative_integer_powers():
    "As PyTorch: randint(high, size), a repeated reduction dim is an error, int ** negative int is an error (not a shape complaint)."
    md.manual_seed(0)
    r = md.randint(3, (500,))
    assert r.shape == (500,) and r.dtype == md.int64 and set(r.tolist()) == {0, 1, 2}
    assert md.randint(2, 5, (4,)).shape == (4,) and md.randint(0, 3, size=(2,), generator=md.Generator().manual_seed(1)).shape == (2,)
    with pytest.raises(TypeError, match="needs a size"): md.randint(4)
    with pytest.raises(RuntimeError, match=r"dim 0 appears multiple times in the list of dims \(0, 0\)"):
        md.ones(2, 3).sum((0, 0))
    with pytest.raises(RuntimeError, match="dim 1 appears multiple times"):
        md.ones(2, 3).mean((1, -1))
    assert md.ones(2, 3).sum((0, -1)).item() == 6.0
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
        md.tensor([2, 3]) ** -1
    np.testing.assert_allclose((md.tensor([2, 3]) ** -1.0).tolist(), [0.5, 1 / 3], rtol=1e-6)      # a float exponent is fine


def test_maximum_and_minimum_values_are_exact_when_recording_gradients():
    "Found by hypothesis: the tie-sharing blend a * 0.5 + b * 0.5 underflowed 5e-324 to 0; the value must be the exact extremum."
    a = md.tensor(np.array([5e-324, 1e308, -np.inf]), requires_grad=True)
    b = md.tensor(np.array([5e-324, 1e308, 1.0]), requires_grad=True)
    for f, ref in ((md.minimum, np.minimum), (md.maximum, np.maximum)):
        y = f(a, b)
        np.testing.assert_array_equal(y.detach().numpy(), ref(a.detach().numpy(), b.detach().numpy()))
        y.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0, 1.0])      # tie: 0.5 + 0.5; -inf: all to a for min, none for max


def test_std_of_a_constant_slice_logsumexp_with_inf_and_negative_gather_indices_follow_pytorch():
    x = md.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], requires_grad=True)
    x.std(1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5]])      # PyTorch's values, not NaN
    assert gradcheck(lambda t: t.std(0), (md.randn(4, 3, dtype="float64", requires_grad=True),))
    assert md.logsumexp(md.tensor([1.0, math.inf]), 0).item() == math.inf
    assert math.isnan(md.logsumexp(md.tensor([1.0, math.nan]), 0).item())
    with pytest.raises(IndexError, match="gather: index -1 is out of bounds for dimension 1 with size 3"):
        md.ones(2, 3).gather(1, md.tensor([[-1], [0]]))
    with pytest.raises(IndexError, match="nll_loss: target -1 is out of bounds for 3 classes"):
        md.nn.functional.nll_loss(md.zeros(2, 3), md.tensor([-1, 0]))

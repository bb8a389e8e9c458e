"""Property tests of convolution, pooling and normalisation: forward against plain-NumPy references written
from the definitions, backward against float64 central differences, over stride/padding/dilation/groups and
odd sizes, on both convolution paths (direct and im2col + GEMM) and both kernel variants (serial, parallel)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import minidl as md
import minidl.conv as C
import minidl.nn.functional as F
from minidl import nn
from minidl.autograd import gradcheck

SETTINGS = settings(max_examples=30, deadline=None)
# the conv_path fixture picks the path once for all of a test's examples, which is what it is for
PATH_SETTINGS = settings(SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture])


def t64(a, requires_grad=True):
    return md.tensor(np.asarray(a, np.float64), dtype="float64", requires_grad=requires_grad)


def conv2d_ref(x, w, b, stride, pads, dilation, groups):
    "Sum over kernel taps of the strided, dilated window times the tap's weights, per group (x float64)."
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = stride, pads, dilation
    N, Cin, H, W = x.shape; O, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1; OW = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xg = xp.reshape(N, groups, Cg, *xp.shape[2:]); wg = w.reshape(groups, O // groups, Cg, kh, kw)
    out = np.zeros((N, groups, O // groups, OH, OW))
    for i in range(kh):
        for j in range(kw):
            win = xg[:, :, :, i * dh: i * dh + sh * (OH - 1) + 1: sh, j * dw: j * dw + sw * (OW - 1) + 1: sw]
            out += np.einsum("ngchw,goc->ngohw", win, wg[:, :, :, i, j])
    out = out.reshape(N, O, OH, OW)
    return out if b is None else out + b[:, None, None]


def conv_transpose2d_ref(x, w, b, stride, padding, output_padding, groups, dilation):
    "Scatter each input pixel times the kernel into the output, then crop the padding."
    N, Cin, H, W = x.shape; _, Cog, kh, kw = w.shape; Cig = Cin // groups
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = stride, padding, output_padding, dilation
    Hf = (H - 1) * sh + dh * (kh - 1) + 1 + oh; Wf = (W - 1) * sw + dw * (kw - 1) + 1 + ow
    full = np.zeros((N, groups * Cog, Hf, Wf))
    for g in range(groups):
        xs, ws = x[:, g * Cig:(g + 1) * Cig], w[g * Cig:(g + 1) * Cig]
        for i in range(kh):
            for j in range(kw):
                full[:, g * Cog:(g + 1) * Cog, i * dh: i * dh + sh * (H - 1) + 1: sh, j * dw: j * dw + sw * (W - 1) + 1: sw] += \
                    np.einsum("nchw,co->nohw", xs, ws[:, :, i, j])
    out = full[:, :, ph: Hf - ph, pw: Wf - pw]
    return out if b is None else out + b[:, None, None]


def pool_windows(H, k, s, p, d, ceil_mode):
    "PyTorch's output size for pooling, and each window's start (in padded coordinates minus p)."
    span = H + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= H + p: out -= 1
    return [o * s - p for o in range(out)]


def max_pool2d_ref(x, k, s, p, d, ceil_mode):
    N, Cc, H, W = x.shape
    hs, ws = pool_windows(H, k[0], s[0], p[0], d[0], ceil_mode), pool_windows(W, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.full((N, Cc, len(hs), len(ws)), -np.inf)
    for a, h0 in enumerate(hs):
        for b_, w0 in enumerate(ws):
            for i in range(k[0]):
                for j in range(k[1]):
                    h, w = h0 + i * d[0], w0 + j * d[1]
                    if 0 <= h < H and 0 <= w < W: out[:, :, a, b_] = np.maximum(out[:, :, a, b_], x[:, :, h, w])
    return out


def avg_pool2d_ref(x, k, s, p, ceil_mode, count_include_pad):
    N, Cc, H, W = x.shape
    hs, ws = pool_windows(H, k[0], s[0], p[0], 1, ceil_mode), pool_windows(W, k[1], s[1], p[1], 1, ceil_mode)
    out = np.zeros((N, Cc, len(hs), len(ws)))
    for a, h0 in enumerate(hs):
        for b_, w0 in enumerate(ws):
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])
            lo_h, hi_h, lo_w, hi_w = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
            div = (h1 - h0) * (w1 - w0) if count_include_pad else (hi_h - lo_h) * (hi_w - lo_w)
            out[:, :, a, b_] = x[:, :, lo_h:hi_h, lo_w:hi_w].sum((2, 3)) / div
    return out


@st.composite
def conv_case(draw):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume(H + 2 * ph >= dh * (kh - 1) + 1 and W + 2 * pw >= dw * (kw - 1) + 1)
    N = draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((N, groups * cg, H, W)); w = rng.standard_normal((groups * og, cg, kh, kw))
    b = rng.standard_normal(groups * og) if draw(st.booleans()) else None
    return x, w, b, (sh, sw), (ph, pw), (dh, dw), groups


@pytest.fixture(params=["direct", "gemm"])
def conv_path(request, monkeypatch):
    "Run the test once on each convolution path."
    monkeypatch.setattr(C, "DIRECT_MAX_TAPS", 10**9 if request.param == "direct" else -1)
    return request.param


@given(case=conv_case())
@PATH_SETTINGS
def test_conv2d_forward_and_backward(case, conv_path):
    x, w, b, s, p, d, groups = case
    out = F.conv2d(t64(x, False), t64(w, False), None if b is None else t64(b, False), s, p, d, groups).numpy()
    np.testing.assert_allclose(out, conv2d_ref(x, w, b, s, tuple((v, v) for v in p), d, groups), rtol=1e-10, atol=1e-10)
    inputs = (t64(x), t64(w)) + (() if b is None else (t64(b),))
    assert gradcheck(lambda *a: F.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, s, p, d, groups), inputs)


@given(case=conv_case())
@PATH_SETTINGS
def test_conv2d_same_padding(case, conv_path):
    x, w, b, _, _, d, groups = case
    kh, kw = w.shape[2:]
    pads = tuple((dd * (k - 1) // 2, dd * (k - 1) - dd * (k - 1) // 2) for k, dd in zip((kh, kw), d))
    out = F.conv2d(t64(x, False), t64(w, False), None, 1, "same", d, groups).numpy()
    assert out.shape[2:] == x.shape[2:]
    np.testing.assert_allclose(out, conv2d_ref(x, w, None, (1, 1), pads, d, groups), rtol=1e-10, atol=1e-10)


@given(case=conv_case())
@PATH_SETTINGS
def test_conv1d_is_conv2d_with_height_one(case, conv_path):
    x, w, b, s, p, d, groups = case
    x1, w1 = x[:, :, 0], w[:, :, 0]
    out = F.conv1d(t64(x1, False), t64(w1, False), None if b is None else t64(b, False), s[1], p[1], d[1], groups).numpy()
    ref = conv2d_ref(x1[:, :, None], w1[:, :, None], b, (1, s[1]), ((0, 0), (p[1], p[1])), (1, d[1]), groups)[:, :, 0]
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda a, c: F.conv1d(a, c, None, s[1], p[1], d[1], groups), (t64(x1), t64(w1)))


@given(case=conv_case(), op=st.tuples(st.integers(0, 2), st.integers(0, 2)))
@SETTINGS
def test_conv_transpose2d(case, op):
    x, w, b, s, p, d, groups = case
    op = tuple(min(o, max(si, di) - 1) for o, si, di in zip(op, s, d))
    N, cin, H, W = x.shape
    cog, (kh, kw) = w.shape[0] // groups, w.shape[2:]
    wt = np.random.default_rng(0).standard_normal((cin, cog, kh, kw))       # (in, out/groups, kh, kw)
    out_hw = [(n - 1) * si - 2 * pi + di * (ki - 1) + oi + 1 for n, si, pi, di, ki, oi in zip((H, W), s, p, d, (kh, kw), op)]
    assume(min(out_hw) >= 1)
    out = F.conv_transpose2d(t64(x, False), t64(wt, False), None if b is None else t64(b, False), s, p, op, groups, d).numpy()
    np.testing.assert_allclose(out, conv_transpose2d_ref(x, wt, b, s, p, op, groups, d), rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda a, c: F.conv_transpose2d(a, c, None, s, p, op, groups, d), (t64(x), t64(wt)))


def test_conv2d_transpose_is_the_input_gradient():
    "conv_transpose2d(g, w) is exactly the gradient of conv2d with respect to its input."
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 3))
    xt = t64(x); y = F.conv2d(xt, t64(w, False), None, 2, 1, 1, 2)
    g = rng.standard_normal(y.shape)
    y.backward(t64(g, False))
    via_transpose = F.conv_transpose2d(t64(g, False), t64(w, False), None, 2, 1, (0, 1), 2).numpy()
    np.testing.assert_allclose(xt.grad.numpy(), via_transpose, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_variant", ["serial", "parallel"])
def test_large_float32_conv_matches_reference_on_both_variants(kernel_variant, conv_path, monkeypatch):
    "Sizes past PARALLEL_MIN_SIZE run the parallel kernels; float32 agrees with the float64 reference."
    import minidl.kernels as K
    monkeypatch.setattr(K, "PARALLEL_MIN_SIZE", 1 << 62 if kernel_variant == "serial" else 0)
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((4, 8, 20, 19)), rng.standard_normal((8, 4, 3, 3)) * 0.2, rng.standard_normal(8)
    xt, wt, bt = (md.tensor(a.astype(np.float32), requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, (1, 2), 1, 1, 2)
    np.testing.assert_allclose(y.detach().numpy(), conv2d_ref(x, w, b, (1, 2), ((1, 1), (1, 1)), (1, 1), 2), rtol=1e-4, atol=1e-4)
    y.sum().backward()
    x64, w64 = t64(x), t64(w)
    F.conv2d(x64, w64, None, (1, 2), 1, 1, 2).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), x64.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wt.grad.numpy(), w64.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(bt.grad.numpy(), np.full(8, y.shape[0] * y.shape[2] * y.shape[3]), rtol=1e-6)


@pytest.mark.parametrize("cache_bytes", [None, 1])    # the whole batch as one piece (columns kept); one image a piece (unfolded again)
def test_conv_a_piece_of_the_batch_at_a_time(cache_bytes, monkeypatch):
    "conv2d and conv_transpose2d, forward and gradients, agree with the references however the batch is cut into pieces."
    monkeypatch.setattr(md.backend.cpu_backend, "cache_bytes", cache_bytes)
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    out = F.conv2d(t64(x, False), t64(w, False), t64(b, False), (2, 1), 1, 1, 2).numpy()
    np.testing.assert_allclose(out, conv2d_ref(x, w, b, (2, 1), ((1, 1), (1, 1)), (1, 1), 2), rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda a, c: F.conv2d(a, c, None, (2, 1), 1, 1, 2), (t64(x), t64(w)))
    wt = rng.standard_normal((4, 3, 3, 3))
    out = F.conv_transpose2d(t64(x, False), t64(wt, False), None, 2, 1, 1).numpy()
    np.testing.assert_allclose(out, conv_transpose2d_ref(x, wt, None, (2, 2), (1, 1), (1, 1), 1, (1, 1)), rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda a, c: F.conv_transpose2d(a, c, None, 2, 1, 1), (t64(x), t64(wt)))


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = tuple(draw(st.integers(0, (di * (ki - 1) + 1) // 2)) for ki, di in zip(k, d))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume(H + 2 * p[0] >= d[0] * (k[0] - 1) + 1 and W + 2 * p[1] >= d[1] * (k[1] - 1) + 1)
    x = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(2 * 3 * H * W).reshape(2, 3, H, W) / 7.0  # distinct: no ties
    return x, k, s, p, d, draw(st.booleans())


@given(case=pool_case())
@SETTINGS
def test_max_pool2d(case):
    x, k, s, p, d, ceil_mode = case
    out = F.max_pool2d(t64(x, False), k, s, p, d, ceil_mode).numpy()
    ref = max_pool2d_ref(x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(out, ref)              # -inf where a dilated window falls wholly in the padding, as in PyTorch
    if np.isfinite(ref).all(): assert gradcheck(lambda a: F.max_pool2d(a, k, s, p, d, ceil_mode), (t64(x),))


@pytest.mark.parametrize("kernel_variant", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2_max_pool_fast_path_matches_numpy(kernel_variant, dtype, monkeypatch):
    "LeNet-style 2×2/stride-2 pooling takes an unrolled kernel: values and winners (ties: the first in row-major order; NaN: the first NaN) as NumPy's argmax gives them."
    import minidl.kernels as K
    monkeypatch.setattr(K, "PARALLEL_MIN_SIZE", 1 << 62 if kernel_variant == "serial" else 0)
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (3, 4, 10, 8)).astype(dtype)             # small integers: many ties
    x[0, 0, 0, 1], x[1, 1, 4, 4], x[2, 3, 9, 7] = np.inf, -np.inf, np.inf
    for a in (x, np.where(rng.random(x.shape) < 0.05, np.nan, x)):
        y, idx = F.max_pool2d(md.tensor(a), 2, return_indices=True)
        windows = a.reshape(3, 4, 5, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 4, 5, 4, 4)
        k = np.argmax(windows, -1)                                     # the first maximum, or the first NaN
        p, q = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
        np.testing.assert_array_equal(idx.numpy(), (2 * p + k // 2) * 8 + 2 * q + k % 2)
        np.testing.assert_array_equal(y.numpy(), np.take_along_axis(windows, k[..., None], -1)[..., 0])


@given(case=pool_case(), count_include_pad=st.booleans())
@SETTINGS
def test_avg_pool2d(case, count_include_pad):
    x, k, s, p, _, ceil_mode = case
    assume(all(pi <= ki // 2 for pi, ki in zip(p, k)))      # average pooling has no dilation to widen the window
    out = F.avg_pool2d(t64(x, False), k, s, p, ceil_mode, count_include_pad).numpy()
    np.testing.assert_allclose(out, avg_pool2d_ref(x, k, s, p, ceil_mode, count_include_pad), rtol=1e-12, atol=1e-15)
    assert gradcheck(lambda a: F.avg_pool2d(a, k, s, p, ceil_mode, count_include_pad), (t64(x),))


@given(H=st.integers(1, 9), W=st.integers(1, 9), oh=st.integers(1, 5), ow=st.integers(1, 5))
@SETTINGS
def test_adaptive_avg_pool2d(H, W, oh, ow):
    x = np.random.default_rng(H * 10 + W).standard_normal((2, 2, H, W))
    ref = np.zeros((2, 2, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = (i * H) // oh, -(-(i + 1) * H // oh)
            w0, w1 = (j * W) // ow, -(-(j + 1) * W // ow)
            ref[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean((2, 3))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(t64(x, False), (oh, ow)).numpy(), ref, rtol=1e-12, atol=1e-15)
    assert gradcheck(lambda a: F.adaptive_avg_pool2d(a, (oh, ow)), (t64(x),))


def test_pools_1d_match_2d_with_height_one():
    x = np.random.default_rng(3).standard_normal((2, 3, 11))
    x1 = t64(x, False)
    np.testing.assert_array_equal(F.max_pool1d(x1, 3, 2, 1, 1, True).numpy(), max_pool2d_ref(x[:, :, None], (1, 3), (1, 2), (0, 1), (1, 1), True)[:, :, 0])
    np.testing.assert_allclose(F.avg_pool1d(x1, 3, 2, 1).numpy(), avg_pool2d_ref(x[:, :, None], (1, 3), (1, 2), (0, 1), False, True)[:, :, 0])
    np.testing.assert_allclose(F.adaptive_avg_pool1d(x1, 4).numpy(), F.adaptive_avg_pool2d(t64(x[:, :, None], False), (1, 4)).numpy()[:, :, 0])


def test_batchnorm2d_train_eval_and_state_dict():
    rng = np.random.default_rng(4)
    bn = nn.BatchNorm2d(3).to(dtype=np.float64)
    batches = [rng.standard_normal((4, 3, 5, 6)) * 3 + 2 for _ in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for b in batches:
        out = bn(t64(b, False)).detach().numpy()
        m, v = b.mean((0, 2, 3)), b.var((0, 2, 3))
        np.testing.assert_allclose(out, (b - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5), rtol=1e-9, atol=1e-9)
        mean, var = 0.9 * mean + 0.1 * m, 0.9 * var + 0.1 * b.var((0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-12, atol=1e-15)
    assert int(bn.num_batches_tracked.numpy()) == 3
    bn.eval()
    x = rng.standard_normal((1, 3, 2, 2))
    np.testing.assert_allclose(bn(t64(x, False)).detach().numpy(), (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), rtol=1e-9)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_group_norm_gradcheck_and_layer_norm_limit():
    x = t64(np.random.default_rng(5).standard_normal((2, 6, 3, 2)))
    assert gradcheck(lambda a: F.group_norm(a, 3), (x,))
    one_group = F.group_norm(x, 1).detach().numpy()          # one group = layer norm over (C, H, W)
    xn = x.detach().numpy()
    np.testing.assert_allclose(one_group, (xn - xn.mean((1, 2, 3), keepdims=True)) / np.sqrt(xn.var((1, 2, 3), keepdims=True) + 1e-5), rtol=1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(md.randn(2, 3, 8, 8), md.randn(4, 2, 3, 3)), "expected input with 2 channels (weight (4, 2, 3, 3), groups=1), got input of shape (2, 3, 8, 8)"),
    (lambda: F.conv2d(md.randn(2, 4, 3, 3), md.randn(4, 4, 5, 5), padding=0), "kernel size (5, 5) (dilation (1, 1)) is larger than the padded input (3, 3)"),
    (lambda: F.conv2d(md.randn(2, 4, 8, 8), md.randn(6, 1, 3, 3), groups=4), "out_channels (6) must be divisible by groups (4)"),
    (lambda: F.conv2d(md.randn(8, 8), md.randn(4, 1, 3, 3)), "expected a 4-D (batched) or 3-D (unbatched) input, got shape (8, 8)"),
    (lambda: F.conv2d(md.randn(1, 1, 8, 8), md.randn(4, 1, 3, 3), stride=2, padding="same"), "padding='same' is not supported for strided"),
    (lambda: F.conv2d(md.randn(1, 1, 8, 8), md.randn(4, 1, 3, 3, dtype="float64")), "input is float32 but weight is float64"),
    (lambda: F.conv1d(md.randn(1, 2, 8), md.randn(4, 3, 3)), "expected input with 3 channels"),
    (lambda: nn.Conv2d(3, 6, 3, groups=2), "in_channels (3) and out_channels (6) must be divisible by groups (2)"),
    (lambda: F.max_pool2d(md.randn(1, 1, 2, 2), 5), "kernel size (5, 5) is larger than the padded input"),
    (lambda: F.max_pool2d(md.randn(1, 1, 8, 8), 2, padding=2), "should be at most half"),
    (lambda: F.conv_transpose2d(md.randn(1, 3, 4, 4), md.randn(4, 2, 3, 3)), "expected input with 4 channels"),
    (lambda: F.conv_transpose2d(md.randn(1, 4, 4, 4), md.randn(4, 2, 3, 3), stride=2, output_padding=2), "output_padding (2, 2) must be smaller than stride"),
    (lambda: nn.GroupNorm(4, 6), "num_channels (6) must be divisible by num_groups (4)"),
    (lambda: F.pad(md.randn(2, 3), (3, 3), mode="reflect"), "must be smaller than the dimension it pads (3)"),
    (lambda: F.fold(md.randn(1, 5, 4), (3, 3), 2), "expected input of shape (N, C×4, 4)"),
])
def test_bad_input_names_the_shapes(call, message):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_weight_changed_in_place_before_backward_is_an_error(op):
    "As in PyTorch: backward would otherwise use the new weights with the old activations, silently."
    x, w = md.randn(1, 2, 5, 5, requires_grad=True), md.randn(2, 2, 3, 3, requires_grad=True)
    y = getattr(F, op)(x, w)
    with md.no_grad():
        w.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("groups", [1, 4])          # both paths keep the input (im2col + GEMM also a one-piece batch's columns)
def test_conv_buffers_kept_for_backward_are_freed_with_the_graph(groups):
    x = md.randn(2, 4, 9, 9, requires_grad=True)
    w = md.randn(4, 4 // groups, 3, 3, requires_grad=True)
    y = F.conv2d(x, w, padding=1, groups=groups)
    node = y.grad_fn
    assert any(t is not None and t.numel() > w.numel() for t in node.saved_tensors)      # the big buffer is saved...
    y.sum().backward()
    assert [k for k, v in vars(node).items() if hasattr(v, "nbytes") or hasattr(v, "_a")] == []   # ...and nothing holds it afterwards
    with pytest.raises(RuntimeError, match="backward through the graph a second time"): node.saved_tensors

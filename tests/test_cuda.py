"""GPU kernels (minidl.cuda) against the CPU kernels. Without an NVIDIA GPU they run in numba's CUDA simulator, so sizes stay small."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from minidl import kernels as K
from minidl import cuda as mc

SIM = settings(max_examples=6, deadline=None)
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


def test_simulator_or_gpu():
    assert mc.simulated() != mc.is_available()      # exactly one: the simulator, or a real GPU


@SIM
@given(shapes, st.data())
def test_binary_broadcasts_like_numpy(shape, data):
    rng = np.random.default_rng(0)
    other = tuple(1 if data.draw(st.booleans()) else n for n in shape)[data.draw(st.integers(0, len(shape) - 1)):]
    a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(other).astype(np.float32)
    np.testing.assert_allclose(mc.binary(mc.add, a, b), a + b, rtol=1e-6)
    np.testing.assert_allclose(mc.binary(mc.mul, b, a), b * a, rtol=1e-6)
    np.testing.assert_array_equal(mc.binary(mc.maximum, a, b), np.maximum(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_on_views_matches_cpu_kernels(dtype):
    x = (np.random.default_rng(1).standard_normal((6, 8)) * 6).astype(dtype)
    for view in (x, x.T, x[:, ::3], x[1:, :]):
        np.testing.assert_allclose(mc.unary(mc.sigmoid, view), K.sigmoid(view), rtol=1e-6)
        np.testing.assert_array_equal(mc.unary(mc.relu, view), K.relu(view))


@SIM
@given(st.integers(1, 700))
def test_total_matches_cpu_sum(n):
    v = np.random.default_rng(n).standard_normal(n)
    assert mc.total(v) == pytest.approx(float(K.sum(v)), rel=1e-12, abs=1e-12)


@SIM
@given(st.integers(1, 4), st.integers(1, 300))
def test_row_reductions_and_the_softmax_family_match_cpu(rows, cols):
    x = (np.random.default_rng(cols).standard_normal((rows, cols)) * 10).astype(np.float32)
    x[0, 0] = 50.0
    np.testing.assert_allclose(mc.row_sums(x), K.sum(x, 1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(mc.rowwise(x), K.softmax(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mc.rowwise(x, mc.LOG_SOFTMAX), K.log_softmax(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mc.rowwise(x, mc.LOGSUMEXP), K.logsumexp(x, 1), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the simulator's 0/0 is NumPy's, in its own threads
def test_softmax_of_an_all_minus_inf_row_is_nan_like_the_cpu():
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)
    np.testing.assert_array_equal(np.isnan(mc.rowwise(x)), np.isnan(K.softmax(x)))


@pytest.mark.parametrize("kernel", ["naive", "tiled", "tuned"])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (16, 16, 16), (17, 33, 5), (5, 40, 31)])
def test_matmul_kernels_match_cpu(kernel, m, k, n):
    rng = np.random.default_rng(m * k * n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    np.testing.assert_allclose(mc.matmul(a, b, kernel), K.matmul(a, b), rtol=1e-4, atol=1e-4)


def test_matmul_errors_name_the_problem():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"matching inner dimensions, got \(3, 4\) and \(3, 4\)"): mc.matmul(a, a)
    with pytest.raises(ValueError, match="kernel must be 'naive', 'tiled' or 'tuned', got 'fast'"): mc.matmul(a, a.T, "fast")


@SIM
@given(st.integers(1, 6), st.integers(1, 300))
def test_scatter_add_counts_every_repeat(size, n):
    rng = np.random.default_rng(n)
    index, src = rng.integers(0, size, n), rng.standard_normal(n)
    out = mc.cuda.to_device(np.zeros(size))
    mc.scatter_add_kernel[mc.blocks_for(n), mc.THREADS](out, mc.cuda.to_device(index), mc.cuda.to_device(src))
    np.testing.assert_allclose(out.copy_to_host(), K.scatter_add(size, index, src), rtol=1e-12, atol=1e-12)

"""Lesson 03's engine adopts a leaf's first gradient instead of copying it when nothing else holds that gradient or its
memory: checked where it must adopt (fresh products, reshaped and transposed views of them) and where it must copy
(anything else holding the tensor or its memory) — a shared gradient would change under its other owner."""
import numpy as np
import pytest

import minidl as md
import minidl.autograd as A
from minidl import nn
from minidl.backend import cpu_backend

pytestmark = pytest.mark.skipif(A._ENGINE_REFS is None, reason="free-threaded CPython: the engine always copies")


@pytest.fixture
def copies(monkeypatch):
    "The shapes of the gradients the engine copied (the backend's `copy`, counted)."
    seen, copy = [], type(cpu_backend).copy
    monkeypatch.setattr(cpu_backend, "copy", lambda a: (seen.append(a.shape), copy(cpu_backend, a))[1])
    return seen


def test_fresh_gradients_are_adopted(copies):
    md.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 2))
    nn.functional.cross_entropy(net(md.randn(4, 1, 6, 6)), md.tensor([0, 1, 1, 0])).backward()
    assert copies == []                                # conv and linear weights (a transposed product), biases: all adopted
    for p in net.parameters(): assert p.grad._a.flags.c_contiguous and p.grad.shape == p.shape


def test_a_gradient_sent_to_two_leaves_is_copied(copies):
    a, b = md.randn(3, requires_grad=True), md.randn(3, requires_grad=True)
    (a + b).sum().backward()
    a.grad.mul_(0.0)
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))


def test_the_callers_gradient_is_copied(copies):
    w, g = md.randn(3, requires_grad=True), md.ones(3)
    w.backward(g)
    w.grad.mul_(0.0)
    np.testing.assert_array_equal(g.numpy(), np.ones(3))


@pytest.mark.parametrize("view", ["transpose", "reshape", "identity"])
def test_a_retained_gradient_is_not_shared_with_the_leaf(view, copies):
    w = md.randn(2, 3, requires_grad=True)
    v = {"transpose": lambda: w.T, "reshape": lambda: w.reshape(6), "identity": lambda: w + 0.0}[view]()
    v.retain_grad()
    (v * 2.0).sum().backward()
    w.grad.mul_(0.0)
    np.testing.assert_array_equal(v.grad.numpy(), np.full(v.shape, 2.0))


def test_a_gradient_a_hook_kept_is_not_shared(copies):
    w = md.randn(3, requires_grad=True)
    kept = []
    y = w + 0.0
    y.register_hook(lambda g: kept.append(g))
    (y * 2.0).sum().backward()                          # y's gradient is fresh; its hook holds it, and Add passes it on to w unchanged
    w.grad.mul_(0.0)
    np.testing.assert_array_equal(kept[0].numpy(), np.full(3, 2.0))


def test_a_gradient_a_custom_function_keeps_is_copied(copies):
    class Keep(A.Function):
        kept = []
        @staticmethod
        def forward(ctx, x): return md.Tensor(x._a * 2)
        @staticmethod
        def backward(ctx, g):
            out = md.Tensor(g._a * 2); Keep.kept.append(out); return out
    w = md.randn(3, requires_grad=True)
    Keep.apply(w).sum().backward()
    w.grad.mul_(0.0)
    np.testing.assert_array_equal(Keep.kept[0].numpy(), np.full(3, 2.0))


def test_adopted_gradients_still_accumulate():
    lin = nn.Linear(3, 2)
    x = md.randn(4, 3)
    lin(x).sum().backward(); first = lin.weight.grad.numpy().copy()
    lin(x).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * first, rtol=1e-6)


def test_a_read_only_gradient_is_copied(copies):
    "sum's backward hands on a broadcast view (read-only): the leaf gets writable memory of its own."
    w = md.randn(1, requires_grad=True)
    w.sum().backward()
    w.grad.mul_(2.0)
    np.testing.assert_array_equal(w.grad.numpy(), [2.0])

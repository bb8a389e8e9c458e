"""The functions and modules added to `nn.functional`/`nn` for PyTorch programs, against PyTorch when it is installed
(values and gradients) and against their definitions otherwise (lesson 06 checks gradients by central differences)."""
import math

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

try: import torch, torch.nn.functional as TF
except ImportError: torch = TF = None

RNG = np.random.default_rng(0)
A, B = RNG.standard_normal((4, 6)), RNG.standard_normal((4, 6))
P = np.exp(RNG.standard_normal((4, 6))); P /= P.sum(1, keepdims=True)

# name: (minidl call, torch call on the torch module F, NumPy reference or None)
CASES = {
    "relu6": (lambda F, a, b: F.relu6(a * 4), lambda a: np.clip(a * 4, 0, 6)),
    "hardtanh": (lambda F, a, b: F.hardtanh(a, -0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7)),
    "hardsigmoid": (lambda F, a, b: F.hardsigmoid(a * 4), lambda a: np.clip(a * 4 / 6 + 0.5, 0, 1)),
    "hardswish": (lambda F, a, b: F.hardswish(a * 4), lambda a: a * 4 * np.clip(a * 4 / 6 + 0.5, 0, 1)),
    "mish": (lambda F, a, b: F.mish(a), lambda a: a * np.tanh(np.log1p(np.exp(a)))),
    "logsigmoid": (lambda F, a, b: F.logsigmoid(a), lambda a: -np.log1p(np.exp(-a))),
    "softsign": (lambda F, a, b: F.softsign(a), lambda a: a / (1 + np.abs(a))),
    "softmin": (lambda F, a, b: F.softmin(a, dim=1), lambda a: np.exp(-a) / np.exp(-a).sum(1, keepdims=True)),
    "glu": (lambda F, a, b: F.glu(a, dim=-1), lambda a: a[:, :3] / (1 + np.exp(-a[:, 3:]))),
    "gelu tanh": (lambda F, a, b: F.gelu(a, approximate="tanh"), lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))),
    "normalize": (lambda F, a, b: F.normalize(a, p=2.0, dim=1), lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)),
    "normalize p=1 dim=0": (lambda F, a, b: F.normalize(a, p=1.0, dim=0), lambda a: a / np.abs(a).sum(0, keepdims=True)),
    "cosine_similarity": (lambda F, a, b: F.cosine_similarity(a, b, dim=1), None),
    "pairwise_distance": (lambda F, a, b: F.pairwise_distance(a, b), None),
    "huber_loss": (lambda F, a, b: F.huber_loss(a, b, delta=0.5), None),
    "huber_loss sum": (lambda F, a, b: F.huber_loss(a, b, reduction="sum"), None),
    "kl_div batchmean": (lambda F, a, b: F.kl_div(F.log_softmax(a, dim=1), F.softmax(b, dim=1), reduction="batchmean"), None),
    "kl_div log_target": (lambda F, a, b: F.kl_div(F.log_softmax(a, dim=1), F.log_softmax(b, dim=1), reduction="sum", log_target=True), None),
    "layer_norm": (lambda F, a, b: F.layer_norm(a, (6,), b[0], b[1]), None),
    "layer_norm no affine": (lambda F, a, b: F.layer_norm(a.reshape(2, 2, 6), [2, 6]), None),
    "interpolate nearest x2": (lambda F, a, b: F.interpolate(a.reshape(1, 2, 2, 6), scale_factor=2), None),
    "interpolate nearest to a size": (lambda F, a, b: F.interpolate(a.reshape(1, 2, 2, 6), size=(5, 4)), None),
    "interpolate nearest-exact": (lambda F, a, b: F.interpolate(a.reshape(1, 2, 2, 6), size=(3, 9), mode="nearest-exact"), None),
    "interpolate bilinear up": (lambda F, a, b: F.interpolate(a.reshape(1, 2, 2, 6), size=(5, 11), mode="bilinear"), None),
    "interpolate bilinear down, corners": (lambda F, a, b: F.interpolate(a.reshape(1, 1, 4, 6), size=(3, 4), mode="bilinear", align_corners=True), None),
    "interpolate bilinear fractional scale": (lambda F, a, b: F.interpolate(a.reshape(1, 1, 4, 6), scale_factor=1.7, mode="bilinear"), None),
    "interpolate linear": (lambda F, a, b: F.interpolate(a.reshape(2, 2, 6), scale_factor=3, mode="linear"), None),
    "interpolate area": (lambda F, a, b: F.interpolate(a.reshape(1, 1, 4, 6), size=(2, 3), mode="area"), None),
}


def _run(fn, lib, a, b, requires_grad):
    to = (lambda v: torch.tensor(v, requires_grad=requires_grad)) if lib is TF else (lambda v: minidl.tensor(v, requires_grad=requires_grad))
    xa, xb = to(a), to(b)
    return fn(lib, xa, xb), xa, xb


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients(name):
    fn, ref = CASES[name]
    out, xa, xb = _run(fn, F, A, B, True)
    if ref is not None: np.testing.assert_allclose(out.detach().numpy(), ref(A), rtol=1e-12, atol=1e-12)
    if torch is None: return
    tout, ta, tb = _run(fn, TF, A, B, True)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-7, atol=1e-12)   # PyTorch's hardsigmoid uses 1/6 in float32
    w = RNG.standard_normal(tuple(out.shape))
    (out * minidl.tensor(w)).sum().backward(); (tout * torch.tensor(w)).sum().backward()
    for mine, theirs in ((xa, ta), (xb, tb)):
        if theirs.grad is None: assert mine.grad is None or not mine.grad.numpy().any(); continue
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_embedding_function_and_padding():
    w = minidl.tensor(RNG.standard_normal((5, 3)), requires_grad=True)
    idx = minidl.tensor([[0, 2], [2, 4]])
    F.embedding(idx, w, padding_idx=2).sum().backward()
    assert w.grad.tolist()[2] == [0.0, 0.0, 0.0] and w.grad.tolist()[0] == [1.0, 1.0, 1.0]
    if torch is not None:
        tw = torch.tensor(w.detach().numpy(), requires_grad=True)
        TF.embedding(torch.tensor([[0, 2], [2, 4]]), tw, padding_idx=2).sum().backward()
        np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy())


def test_modules_print_and_run_like_pytorchs():
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU6(), nn.Hardtanh(-2, 2), nn.GELU(approximate="tanh"), nn.Mish(), nn.ELU(0.5),
                        nn.Softplus(beta=2), nn.GLU(), nn.Softsign())
    assert net(minidl.randn(3, 6)).shape == (3, 3)
    assert "Hardtanh(min_val=-2, max_val=2)" in repr(net) and "GELU(approximate='tanh')" in repr(net)
    x1, x2 = minidl.randn(4, 5), minidl.randn(4, 5)
    assert nn.CosineSimilarity()(x1, x2).shape == (4,) and nn.PairwiseDistance(keepdim=True)(x1, x2).shape == (4, 1)
    assert abs(nn.HuberLoss(delta=2.0)(x1, x2).item() - F.huber_loss(x1, x2, delta=2.0).item()) < 1e-7
    assert nn.KLDivLoss(reduction="batchmean")(F.log_softmax(x1, 1), F.softmax(x2, 1)).item() >= 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_kernel_matches_pytorch_and_keeps_nan_in_its_row(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 10)) * 3 + 2
    x[1, 2, 4] = np.nan; x[2, 0, 1] = np.inf
    w, b = rng.standard_normal(10), rng.standard_normal(10)
    with minidl.no_grad(): got = F.layer_norm(minidl.tensor(x, dtype=dtype), (10,), minidl.tensor(w, dtype=dtype), minidl.tensor(b, dtype=dtype)).numpy()
    if torch is not None:
        want = TF.layer_norm(torch.tensor(x, dtype=getattr(torch, dtype)), (10,), torch.tensor(w, dtype=getattr(torch, dtype)), torch.tensor(b, dtype=getattr(torch, dtype))).numpy()
    else:
        mean = x.mean(-1, keepdims=True); want = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5 if dtype == "float32" else 1e-12)
    assert np.isnan(got[1, 2]).all() and np.isnan(got[2, 0]).all()          # a NaN or inf spoils its own row, and only that row
    assert np.isfinite(np.delete(got.reshape(12, 10), [5, 6], axis=0)).all()

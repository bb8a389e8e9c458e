"The long tail of small functions (lesson 05b) against PyTorch: values, dtypes, and gradients where they have them."
import math

import numpy as np
import pytest
import torch

import minidl as md

rng = np.random.default_rng(0)
A, B = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
V, W = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
P = (rng.random((3, 4)) * 0.8 + 0.1).astype(np.float32)
I = np.array([3, 1, 3, 0, 2, 3], dtype=np.int64)
N = np.array([1.0, np.nan, 3.0, -2.0], dtype=np.float32)

CASES = {   # name: f(lib, a tensor maker) for both libraries
    "mm": lambda L, t: L.mm(t(A), t(B)), "mv": lambda L, t: L.mv(t(A), t(V)), "dot": lambda L, t: L.dot(t(V), t(W)),
    "diag 1-d": lambda L, t: L.diag(t(V)), "diag 1-d above": lambda L, t: L.diag(t(V), 2), "diag 1-d below": lambda L, t: L.diag(t(V), -1),
    "diag 2-d": lambda L, t: L.diag(t(A), 1), "diagonal": lambda L, t: L.diagonal(t(A).reshape(2, 3, 2), offset=-1, dim1=0, dim2=2),
    "trace": lambda L, t: L.trace(t(A)), "movedim": lambda L, t: L.movedim(t(A).reshape(3, 2, 2), (0, 1), (2, 0)),
    "unbind": lambda L, t: L.stack(L.unbind(t(A), 1)), "tile": lambda L, t: L.tile(t(V), (2, 2)), "hstack": lambda L, t: L.hstack([t(V), t(W)]),
    "vstack": lambda L, t: L.vstack([t(V), t(W)]), "unflatten": lambda L, t: L.unflatten(t(A), 1, (2, 2)),
    "square": lambda L, t: L.square(t(A)), "lerp": lambda L, t: L.lerp(t(V), t(W), 0.3), "addcmul": lambda L, t: L.addcmul(t(V), t(W), t(V), value=0.5),
    "addcdiv": lambda L, t: L.addcdiv(t(V), t(W), t(P)[0], value=2), "logaddexp": lambda L, t: L.logaddexp(t(A) * 100, t(A).flip(0) * 100),
    "hypot": lambda L, t: L.hypot(t(V), t(W)), "frac": lambda L, t: L.frac(t(A) * 3), "fmod": lambda L, t: L.fmod(t(A) * 5, 1.5),
    "exp2": lambda L, t: L.exp2(t(A)), "logit": lambda L, t: L.logit(t(P)), "logit eps": lambda L, t: L.logit(t(P) * 2 - 0.5, eps=1e-3),
    "xlogy": lambda L, t: L.xlogy(t(P) * (t(A) > 0), t(P)), "erfc": lambda L, t: L.erfc(t(A)), "deg2rad": lambda L, t: L.deg2rad(t(A)),
    "norm": lambda L, t: L.norm(t(A)), "norm p1 dim": lambda L, t: t(A).norm(p=1, dim=1), "norm inf": lambda L, t: t(A).norm(p=math.inf),
    "norm p3 keepdim": lambda L, t: t(A).norm(p=3, dim=0, keepdim=True), "nansum": lambda L, t: L.nansum(t(N)), "nanmean": lambda L, t: L.nanmean(t(N)),
    "var_mean": lambda L, t: L.stack(L.var_mean(t(A), 1)), "std_mean": lambda L, t: L.stack(L.std_mean(t(A), 0, keepdim=True)),
    "aminmax": lambda L, t: L.stack(tuple(L.aminmax(t(A), dim=1))), "count_nonzero": lambda L, t: L.count_nonzero(t(A) > 0, dim=1),
    "kthvalue": lambda L, t: L.kthvalue(t(A), 2, dim=1).values, "kthvalue idx": lambda L, t: L.kthvalue(t(A), 3, 0).indices,
    "masked_select": lambda L, t: L.masked_select(t(A), t(A) > 0), "take": lambda L, t: L.take(t(A), t(I)),
    "nonzero": lambda L, t: L.nonzero(t(A) > 0.5), "argwhere": lambda L, t: L.argwhere(t(A) > 0),
    "unique": lambda L, t: L.stack(L.unique(t(I), return_counts=True)), "unique inverse": lambda L, t: L.unique(t(I), return_inverse=True)[1],
    "bincount": lambda L, t: L.bincount(t(I)), "bincount weights": lambda L, t: L.bincount(t(I), t(np.arange(6.0, dtype=np.float32)), minlength=6),
    "searchsorted": lambda L, t: L.searchsorted(t(np.sort(V)), t(A)), "searchsorted right": lambda L, t: L.searchsorted(t(np.arange(5.0)), t(np.array([1.0, 2.5, 4.0])), right=True),
    "isin": lambda L, t: L.isin(t(I), t(np.array([3, 0]))), "scatter": lambda L, t: L.zeros(3, 5).scatter(1, t(np.array([[0, 4], [1, 2], [3, 1]])), t(A[:, :2])),
    "scatter value": lambda L, t: L.zeros(2, 4).scatter(1, t(np.array([[1], [3]])), 7.0), "scatter_add": lambda L, t: L.ones(3, 5).scatter_add(1, t(np.array([[0, 0], [1, 4], [3, 3]])), t(A[:, :2])),
    "index_add": lambda L, t: L.zeros(5, 4).index_add(0, t(np.array([4, 0, 4])), t(A), alpha=2), "tril_indices": lambda L, t: L.tril_indices(3, 4, 1),
    "triu_indices": lambda L, t: L.triu_indices(4, 3, -1), "cartesian_prod": lambda L, t: L.cartesian_prod(t(V[:2]), t(W[:3])),
    "broadcast_tensors": lambda L, t: L.stack(L.broadcast_tensors(t(V), t(A[:, :1]))), "broadcast_to": lambda L, t: L.broadcast_to(t(V), (2, 4)),
    "swapaxes": lambda L, t: L.swapaxes(t(A), 0, 1), "clamp_min": lambda L, t: L.clamp_min(t(A), 0.1), "clamp_max": lambda L, t: t(A).clamp_max(-0.1),
    "equal": lambda L, t: L.tensor(L.equal(t(A), t(A)) and not L.equal(t(A), t(A) + 1)),
}


def mk(lib):
    return (lambda a: md.tensor(a)) if lib is md else (lambda a: torch.tensor(a))


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_dtypes_match_pytorch(name):
    mine, theirs = CASES[name](md, mk(md)), CASES[name](torch, mk(torch))
    assert str(mine.dtype) == str(theirs.dtype).removeprefix("torch."), (mine.dtype, theirs.dtype)
    np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(), rtol=2e-5, atol=1e-5)


DIFFERENTIABLE = ["mm", "mv", "dot", "diag 1-d", "diag 1-d below", "diag 2-d", "diagonal", "trace", "movedim", "unbind", "tile", "hstack", "unflatten",
                  "square", "lerp", "addcmul", "addcdiv", "logaddexp", "hypot", "exp2", "logit", "xlogy", "erfc", "norm", "norm p1 dim", "norm inf",
                  "norm p3 keepdim", "var_mean", "std_mean", "kthvalue", "masked_select", "take", "scatter", "scatter_add", "index_add", "cartesian_prod",
                  "broadcast_to", "swapaxes"]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_match_pytorch(name):
    leaves = {}
    def maker(lib):
        def t(a):
            if a.dtype.kind != "f": return md.tensor(a) if lib is md else torch.tensor(a)
            key = (lib.__name__, a.tobytes(), a.shape)
            if key not in leaves: leaves[key] = md.tensor(a, requires_grad=True) if lib is md else torch.tensor(a, requires_grad=True)
            return leaves[key]
        return t
    mine, theirs = CASES[name](md, maker(md)), CASES[name](torch, maker(torch))
    weights = np.random.default_rng(1).standard_normal(tuple(theirs.shape)).astype(np.float32)
    (mine * md.tensor(weights)).sum().backward(); (theirs * torch.tensor(weights)).sum().backward()
    pairs = [(leaves[k], leaves[("torch",) + k[1:]]) for k in leaves if k[0] == "minidl"]
    assert pairs
    for m, t in pairs:
        assert (m.grad is None) == (t.grad is None)
        if m.grad is not None: np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_in_place_versions_and_attributes():
    for name, args in (("relu_", ()), ("sigmoid_", ()), ("tanh_", ()), ("abs_", ()), ("neg_", ()), ("exp_", ()), ("square_", ()), ("clamp_", (-0.5, 0.5)),
                       ("lerp_", (np.ones((3, 4), np.float32), 0.25)), ("addcmul_", (A, A)), ("fmod_", (0.7,))):
        m, t = md.tensor(A.copy()), torch.tensor(A.copy())
        getattr(m, name)(*[md.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        getattr(t, name)(*[torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-6, atol=1e-6, err_msg=name)
    m = md.zeros(2, 3); m.scatter_(1, md.tensor([[2], [0]]), 1.0); assert m.tolist() == [[0, 0, 1], [1, 0, 0]]
    x = md.ones(2, 3)
    assert (x.nbytes, x.itemsize, x.is_cuda, x.ndimension()) == (24, 4, False, 2)
    y = md.ones(2, requires_grad=True) * 2; y.detach_(); assert y.grad_fn is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="dot: inconsistent tensor size"): md.dot(md.ones(2), md.ones(3))
    with pytest.raises(RuntimeError, match="bincount only supports 1-d non-negative"): md.bincount(md.tensor([1, -1]))
    with pytest.raises(IndexError, match="out of bounds for dimension 1 with size 3"): md.zeros(2, 3).scatter(1, md.tensor([[3]]), 1.0)

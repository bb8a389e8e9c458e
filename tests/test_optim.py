"""Each optimizer's parameter trajectory over 20 steps against a plain-NumPy transcription of its published rule."""
import math
import numpy as np
import pytest
import minidl
import minidl as md
import minidl.nn as nn
from minidl import optim

STEPS = 20

def quadratic_grads(p):
    "Gradient of a fixed, non-trivial loss: sum(A p * p) + sum(sin(p)) with a fixed positive diagonal A."
    a = np.linspace(0.5, 3.0, p.size).reshape(p.shape)
    return 2 * a * p + np.cos(p)

def run_minidl(make, p0):
    p = nn.Parameter(md.tensor(p0.copy(), dtype="float64"))
    opt = make([p])
    out = []
    for _ in range(STEPS):
        p.grad = md.tensor(quadratic_grads(p.detach().numpy()))
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)

def ref_sgd(p, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    out, buf = [], None
    for t in range(STEPS):
        g = quadratic_grads(p) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return np.array(out)

def ref_adam(p, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    m, v, vmax, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for t in range(1, STEPS + 1):
        g = quadratic_grads(p)
        if decoupled: p = p * (1 - lr * weight_decay)
        else: g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        mhat, vhat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        if amsgrad:
            vmax = np.maximum(vmax, v); vhat = vmax / (1 - betas[1] ** t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(p)
    return np.array(out)

def ref_rmsprop(p, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    sq, gavg, buf, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for t in range(STEPS):
        g = quadratic_grads(p) + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            gavg = alpha * gavg + (1 - alpha) * g
            avg = np.sqrt(sq - gavg**2) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum:
            buf = momentum * buf + g / avg; p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return np.array(out)

def ref_adagrad(p, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    acc, out = np.full_like(p, initial_accumulator_value), []
    for t in range(1, STEPS + 1):
        g = quadratic_grads(p) + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = acc + g * g
        p = p - clr * g / (np.sqrt(acc) + eps)
        out.append(p)
    return np.array(out)

CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.05)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.1, amsgrad=True)),
    (optim.AdamW, lambda p, **kw: ref_adam(p, decoupled=True, **kw), dict(lr=0.1, weight_decay=0.1)),
    (optim.AdamW, lambda p, **kw: ref_adam(p, decoupled=True, **kw), dict(lr=0.1, weight_decay=0.05, amsgrad=True)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
]

@pytest.mark.parametrize("cls,ref,kw", CASES, ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_trajectory_matches_reference(cls, ref, kw):
    p0 = np.random.default_rng(0).standard_normal((3, 4))
    got = run_minidl(lambda ps: cls(ps, **kw), p0)
    np.testing.assert_allclose(got, ref(p0, **kw), rtol=1e-10, atol=1e-12)
    assert np.abs(got[-1] - p0).max() > 1e-3       # it really moved

def test_float32_parameters_stay_float32():
    p = nn.Parameter(md.randn(5)); p.grad = md.randn(5)
    optim.Adam([p], lr=0.1).step()
    assert p.dtype == md.float32

def test_resume_from_state_dict_continues_identically():
    p0 = np.random.default_rng(1).standard_normal(6)
    full = run_minidl(lambda ps: optim.Adam(ps, lr=0.1), p0)
    p = nn.Parameter(md.tensor(p0.copy(), dtype="float64")); opt = optim.Adam([p], lr=0.1)
    for _ in range(10):
        p.grad = md.tensor(quadratic_grads(p.detach().numpy())); opt.step()
    sd = opt.state_dict()
    q = nn.Parameter(md.tensor(p.detach().numpy().copy())); opt2 = optim.Adam([q], lr=0.5); opt2.load_state_dict(sd)
    for _ in range(10):
        q.grad = md.tensor(quadratic_grads(q.detach().numpy())); opt2.step()
    np.testing.assert_array_equal(q.detach().numpy(), full[-1])


try: import torch
except ImportError: torch = None

NEW = [("Adadelta", dict(lr=0.5)), ("Adadelta", dict(rho=0.8, weight_decay=0.1, maximize=True)), ("Adamax", dict(lr=0.01)),
       ("Adamax", dict(betas=(0.8, 0.9), weight_decay=0.05)), ("NAdam", dict(lr=0.01)), ("NAdam", dict(weight_decay=0.1, momentum_decay=0.01)),
       ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True))]


@pytest.mark.skipif(torch is None, reason="compares with PyTorch's optimizers; lesson 07 checks them against NumPy transcriptions")
@pytest.mark.parametrize("name,kw", NEW, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEW)])
def test_new_optimizers_follow_pytorch_for_20_steps(name, kw):
    p0 = np.random.default_rng(0).standard_normal(7)
    p, tp = minidl.tensor(p0, requires_grad=True), torch.tensor(p0, requires_grad=True)
    opt, topt = getattr(minidl.optim, name)([p], **kw), getattr(torch.optim, name)([tp], **kw)
    for step in range(20):
        g = np.sin(p0 * (step + 1))
        p.grad, tp.grad = minidl.tensor(g), torch.tensor(g)
        opt.step(); topt.step()
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-8, atol=1e-12)   # PyTorch averages with lerp: rounding differs


SCHEDULES = [("ConstantLR", dict(factor=0.25, total_iters=3)), ("PolynomialLR", dict(total_iters=6, power=0.5)),
             ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.01)), ("CosineAnnealingWarmRestarts", dict(T_0=4))]


@pytest.mark.skipif(torch is None, reason="compares with PyTorch's schedulers; lesson 07 checks them against known values")
@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[n for n, _ in SCHEDULES])
def test_new_schedules_follow_pytorch(name, kw):
    opt, topt = minidl.optim.SGD([minidl.zeros(1, requires_grad=True)], lr=0.5), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    s, ts = getattr(minidl.optim, name)(opt, **kw), getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    for _ in range(15):
        assert abs(opt.param_groups[0]["lr"] - topt.param_groups[0]["lr"]) < 1e-12
        opt.step(); topt.step(); s.step(); ts.step()


@pytest.mark.skipif(torch is None, reason="compares with PyTorch's ReduceLROnPlateau")
@pytest.mark.parametrize("kw", [dict(), dict(mode="max", factor=0.5, patience=2, threshold=0.1, threshold_mode="abs", cooldown=1, min_lr=0.05)], ids=["min", "max"])
def test_reduce_on_plateau_follows_pytorch(kw):
    metrics = [1.0, 0.9, 0.95, 0.9, 0.91, 0.9, 0.89, float("nan"), 0.9, 0.9, 0.9, 0.9, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9] * 2
    opt, topt = minidl.optim.SGD([minidl.zeros(1, requires_grad=True)], lr=1.0), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    s, ts = minidl.optim.ReduceLROnPlateau(opt, **kw), torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    for m in metrics:
        s.step(m); ts.step(m)
        assert abs(opt.param_groups[0]["lr"] - topt.param_groups[0]["lr"]) < 1e-12


def test_lbfgs_follows_pytorchs_iterates_and_fits_a_logistic_regression_as_it_does():
    import torch
    def rosen(x): return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    for search in (None, "strong_wolfe"):
        x, tx = minidl.tensor([-1.5, 2.0], dtype="float64", requires_grad=True), torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
        opt, topt = minidl.optim.LBFGS([x], history_size=7, max_iter=15, line_search_fn=search), torch.optim.LBFGS([tx], history_size=7, max_iter=15, line_search_fn=search)
        for _ in range(4):
            def closure(): opt.zero_grad(); loss = rosen(x); loss.backward(); return loss
            def tclosure(): topt.zero_grad(); loss = rosen(tx); loss.backward(); return loss
            np.testing.assert_allclose(opt.step(closure).item(), topt.step(tclosure).item(), rtol=1e-7, atol=1e-15)   # the same arithmetic up to
            np.testing.assert_allclose(x.detach().numpy(), tx.detach().numpy(), rtol=1e-7, atol=1e-10)     # float64 rounding
            assert opt.state[x]["func_evals"] == topt.state[tx]["func_evals"] and opt.state[x]["n_iter"] == topt.state[tx]["n_iter"]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)).astype(np.float32); y = (X @ rng.standard_normal(6) > 0.3).astype(np.int64)
    minidl.manual_seed(0); m = minidl.nn.Linear(6, 2)
    tm = torch.nn.Linear(6, 2); tm.load_state_dict({k: torch.tensor(v.numpy()) for k, v in m.state_dict().items()})
    opt, topt = minidl.optim.LBFGS(m.parameters(), line_search_fn="strong_wolfe"), torch.optim.LBFGS(tm.parameters(), line_search_fn="strong_wolfe")
    Xm, ym, Xt, yt = minidl.tensor(X), minidl.tensor(y), torch.tensor(X), torch.tensor(y)
    for _ in range(2):
        opt.step(lambda: (opt.zero_grad(), loss := minidl.nn.functional.cross_entropy(m(Xm), ym), loss.backward(), loss)[-1])
        topt.step(lambda: (topt.zero_grad(), loss := torch.nn.functional.cross_entropy(tm(Xt), yt), loss.backward(), loss)[-1])
    final, tfinal = minidl.nn.functional.cross_entropy(m(Xm), ym).item(), torch.nn.functional.cross_entropy(tm(Xt), yt).item()
    assert final < 0.05 and abs(final - tfinal) < 1e-2 * max(tfinal, 1e-3) + 1e-4
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        minidl.optim.LBFGS([{"params": [m.weight]}, {"params": [m.bias]}])

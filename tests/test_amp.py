"Half precision (lesson 21): 16-bit dtypes bit for bit against PyTorch, autocast's op lists, the GradScaler, mixed-precision training."
import math

import numpy as np
import pytest
import torch

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.amp import GradScaler, MixedPrecision, autocast
from minidl.learner import Callback, DataLoaders, Learner, accuracy
from minidl.models import create_model

HALVES = [(minidl.float16, torch.float16), (minidl.bfloat16, torch.bfloat16)]
SPECIAL = [0.0, -0.0, 1.0, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 65504.0, 65519.0, 65520.0, 1e5, 3.4e38, 3.5e38, 6e-8, 3e-8, 2.9e-8,
           1e-40, 1e-45, float("inf"), -float("inf"), float("nan")]


def bits(t): return t.numpy().view(np.uint16) if isinstance(t, minidl.Tensor) else t.view(torch.int16).numpy().view(np.uint16)


def assert_same_bits(mine, theirs, msg=""):
    "Equal bit patterns, except that any NaN matches any NaN (PyTorch's own NaN bits differ between its vectorised and scalar loops)."
    nan = np.isnan(mine.float().numpy())
    np.testing.assert_array_equal(nan, np.isnan(theirs.float().numpy()), err_msg=msg)
    np.testing.assert_array_equal(bits(mine)[~nan], bits(theirs)[~nan], err_msg=msg)


@pytest.mark.parametrize("dt,tdt", HALVES)
@pytest.mark.parametrize("source", ["float32", "float64", "int64", "bool", "other half"])
def test_casts_round_to_the_bits_pytorch_gives(dt, tdt, source):
    rng = np.random.default_rng(0)
    if source in ("float32", "float64"):
        with np.errstate(over="ignore"): v = np.concatenate([SPECIAL, rng.standard_normal(20_000) * 10.0 ** rng.integers(-10, 8, 20_000)]).astype(source)
        mid = (np.float64(1) + np.float64(1 + 2**-10)) / 2                 # a float16 tie, nudged below the float32 precision
        v = np.concatenate([v, np.array([mid + 1e-12, mid - 1e-12, 1 + 2**-8 + 1e-12]).astype(source)])
    elif source == "int64": v = np.concatenate([rng.integers(-2**40, 2**40, 5000), np.arange(-70000, 70000, 7)])
    elif source == "bool": v = np.array([True, False, True])
    else:
        other = minidl.bfloat16 if dt == minidl.float16 else minidl.float16
        v = minidl.tensor(rng.standard_normal(5000).astype(np.float32) * 1000).to(other)
        tv = torch.tensor(v.float().numpy()).to(torch.bfloat16 if tdt == torch.float16 else torch.float16)
        assert_same_bits(v.to(dt), tv.to(tdt))
        return
    assert_same_bits(minidl.tensor(v).to(dt), torch.tensor(v).to(tdt))


@pytest.mark.parametrize("dt,tdt", HALVES)
def test_16_bit_arithmetic_is_computed_in_float32_and_rounded_once_as_in_pytorch(dt, tdt):
    rng = np.random.default_rng(1)
    a32, b32 = rng.standard_normal(4096).astype(np.float32) * 3, rng.standard_normal(4096).astype(np.float32) * 3
    a, b, ta, tb = minidl.tensor(a32).to(dt), minidl.tensor(b32).to(dt), torch.tensor(a32).to(tdt), torch.tensor(b32).to(tdt)
    pos, tpos = a.abs() + 0.125, ta.abs() + 0.125
    cases = [(a + b, ta + tb), (a * b, ta * tb), (a / b, ta / tb), (a - b, ta - tb), (a * 0.1, ta * 0.1), (a / 0.3, ta / 0.3), (a + 0.1, ta + 0.1), (a - 0.7, ta - 0.7), (a + 3, ta + 3), (2.5 - a, 2.5 - ta),
             (a.exp(), ta.exp()), (pos.log(), tpos.log()), (pos.sqrt(), tpos.sqrt()), (a.tanh(), ta.tanh()), (a.sigmoid(), ta.sigmoid()),
             (a.abs(), ta.abs()), (-a, -ta), (a.relu(), ta.relu()), (minidl.maximum(a, b), torch.maximum(ta, tb)),
             (a ** 2, ta ** 2), (a.floor(), ta.floor()), (a.clamp(-1, 1), ta.clamp(-1, 1))]
    for i, (mine, theirs) in enumerate(cases):
        assert mine.dtype == dt, i
        assert_same_bits(mine, theirs, f"case {i}")
    assert ((a < b).numpy() == (ta < tb).numpy()).all()


def test_promotion_follows_pytorch():
    names = ["float16", "bfloat16", "float32", "float64", "int64", "int32", "uint8", "bool"]
    mk = lambda n, d: minidl.ones(3, dtype=n) if d else minidl.ones((), dtype=n)
    tk = lambda n, d: torch.ones(3, dtype=getattr(torch, n)) if d else torch.ones((), dtype=getattr(torch, n))
    for x in names:
        for y in names:
            for dx, dy in [(1, 1), (1, 0), (0, 1)]:
                assert str((mk(x, dx) + mk(y, dy)).dtype) == str((tk(x, dx) + tk(y, dy)).dtype).removeprefix("torch."), (x, y, dx, dy)
        for scalar in (2, 2.5, True):
            assert str((mk(x, 1) * scalar).dtype) == str((tk(x, 1) * scalar).dtype).removeprefix("torch."), (x, scalar)


@pytest.mark.parametrize("dt,tdt", HALVES)
def test_reductions_matmul_and_softmax_in_16_bits_match_pytorch(dt, tdt):
    rng = np.random.default_rng(2)
    x32 = rng.standard_normal((64, 48)).astype(np.float32)
    x, tx = minidl.tensor(x32).to(dt), torch.tensor(x32).to(tdt)
    for mine, theirs in [(x.sum(1), tx.sum(1)), (x.mean(0), tx.mean(0)), (x.amax(1), tx.amax(1)), (x @ x.T, tx @ tx.T),
                         (x.softmax(1), tx.softmax(1)), (x.log_softmax(1), tx.log_softmax(1)), (x.cumsum(1), tx.cumsum(1))]:
        assert mine.dtype == dt
        # one rounding of a float32 result: at most one unit in the last place apart (summation orders differ)
        ulp = np.abs(theirs.float().numpy()) * (2**-10 if dt == minidl.float16 else 2**-7) + 1e-6
        assert (np.abs(mine.float().numpy() - theirs.float().numpy()) <= ulp).all()
    big = minidl.ones(100_000, dtype=dt)
    assert big.mean().item() == 1.0 and big.sum().item() == torch.ones(100_000, dtype=tdt).sum().item()


@pytest.mark.parametrize("dt,tdt", HALVES)
def test_a_16_bit_network_trains_like_pytorchs(dt, tdt):
    "The same CNN, in 16 bits end to end with SGD: a forward, backward and step give PyTorch's numbers to 16-bit precision."
    minidl.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 10), nn.LayerNorm(10))
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(100, 10), torch.nn.LayerNorm(10))
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    net.to(dt); tnet.to(tdt)
    assert all(p.dtype == dt for p in net.parameters())
    x = np.random.default_rng(3).standard_normal((8, 1, 12, 12)).astype(np.float32)
    y = np.arange(8) % 10
    loss = F.cross_entropy(net(minidl.tensor(x).to(dt)), minidl.tensor(y))
    tloss = torch.nn.functional.cross_entropy(tnet(torch.tensor(x).to(tdt)), torch.tensor(y))
    loss.backward(); tloss.backward()
    optim.SGD(net.parameters(), lr=0.1).step(); torch.optim.SGD(tnet.parameters(), lr=0.1).step()
    tol = 2e-2 if dt == minidl.bfloat16 else 3e-3
    assert abs(loss.item() - tloss.item()) < tol * abs(tloss.item())
    for (k, v), tv in zip(net.state_dict().items(), tnet.state_dict().values()):
        assert v.dtype == dt
        np.testing.assert_allclose(v.float().numpy(), tv.float().numpy(), atol=tol, rtol=tol, err_msg=k)


def test_16_bit_state_dicts_save_and_load_with_their_dtype(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).half()
    minidl.save(net.state_dict(), tmp_path / "h.safetensors")
    back = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).half()
    back.load_state_dict(minidl.load(tmp_path / "h.safetensors"))
    for a, b in zip(net.parameters(), back.parameters()):
        assert b.dtype == minidl.float16 and (a.detach().numpy() == b.detach().numpy()).all()


def test_16_bit_tensors_on_the_gpu_agree_with_the_cpu():
    x = minidl.randn(4, 6)                       # small: the simulator runs a Python thread per element
    for dt in (minidl.float16, minidl.bfloat16):
        c, g = x.to(dt), x.to(dt).cuda()
        for f in (lambda t: t @ t.T, lambda t: (t * 0.1 + 1).exp().sum(1), lambda t: t.softmax(1), lambda t: F.gelu(t)):
            got = f(g).cpu()
            assert got.dtype == dt and (got.numpy().view(np.uint16) == f(c).numpy().view(np.uint16)).all()


OPS = {   # name: (minidl call, torch call) on 2-d inputs a (4, 6), b (6, 5), t int targets
    "matmul": (lambda m, a, b, t: a @ b, lambda a, b, t: a @ b),
    "linear": (lambda m, a, b, t: F.linear(a, b.T), lambda a, b, t: torch.nn.functional.linear(a, b.T)),
    "bmm": (lambda m, a, b, t: m.bmm(a[None], b[None]), lambda a, b, t: torch.bmm(a[None], b[None])),
    "addmm": (lambda m, a, b, t: m.addmm(a @ b, a, b), lambda a, b, t: torch.addmm(a @ b, a, b)),
    "conv1d": (lambda m, a, b, t: F.conv1d(a[None], b.T[:, :4, None]), lambda a, b, t: torch.nn.functional.conv1d(a[None], b.T[:, :4, None])),
    "sdpa": (lambda m, a, b, t: F.scaled_dot_product_attention(a[None], a[None], a[None]), lambda a, b, t: torch.nn.functional.scaled_dot_product_attention(a[None], a[None], a[None])),
    "cross_entropy": (lambda m, a, b, t: F.cross_entropy(a, t), lambda a, b, t: torch.nn.functional.cross_entropy(a, t)),
    "mse_loss": (lambda m, a, b, t: F.mse_loss(a, a * 2), lambda a, b, t: torch.nn.functional.mse_loss(a, a * 2)),
    "l1_loss": (lambda m, a, b, t: F.l1_loss(a, a * 2), lambda a, b, t: torch.nn.functional.l1_loss(a, a * 2)),
    "bce_logits": (lambda m, a, b, t: F.binary_cross_entropy_with_logits(a, a.sigmoid()), lambda a, b, t: torch.nn.functional.binary_cross_entropy_with_logits(a, a.sigmoid())),
    "softmax": (lambda m, a, b, t: a.softmax(1), lambda a, b, t: a.softmax(1)),
    "sum": (lambda m, a, b, t: a.sum(), lambda a, b, t: a.sum()),
    "exp": (lambda m, a, b, t: a.exp(), lambda a, b, t: a.exp()),
    "layer_norm": (lambda m, a, b, t: F.layer_norm(a, (6,)), lambda a, b, t: torch.nn.functional.layer_norm(a, (6,))),
    "cat": (lambda m, a, b, t: m.cat([a, b.T[:, :6].float()]), lambda a, b, t: torch.cat([a, b.T[:, :6].float()])),
    "relu": (lambda m, a, b, t: a.relu(), lambda a, b, t: a.relu()),
}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dt,tdt", HALVES)
@pytest.mark.parametrize("given", ["float32", "16-bit"])
def test_autocast_gives_each_op_the_dtype_pytorchs_cpu_autocast_gives(name, dt, tdt, given):
    rng = np.random.default_rng(4)
    a32, b32, t = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32), np.array([0, 2, 4, 5])
    conv = (lambda x: x) if given == "float32" else (lambda x: x.to(dt) if isinstance(x, minidl.Tensor) else x.to(tdt))
    a, b, ta, tb = conv(minidl.tensor(a32)), conv(minidl.tensor(b32)), conv(torch.tensor(a32)), conv(torch.tensor(b32))
    mine_fn, theirs_fn = OPS[name]
    with autocast("cpu", dtype=dt): mine = mine_fn(minidl, a, b, minidl.tensor(t))
    with torch.autocast("cpu", dtype=tdt): theirs = theirs_fn(ta, tb, torch.tensor(t))
    assert str(mine.dtype) == str(theirs.dtype).removeprefix("torch.")
    tol = 0.05 if dt == minidl.bfloat16 else 0.01
    np.testing.assert_allclose(mine.detach().float().numpy(), theirs.detach().float().numpy(), atol=tol, rtol=tol)


def test_autocast_on_cuda_runs_the_cuda_float32_list_and_leaves_the_cpu_alone():
    x = minidl.randn(4, 6, device="cuda")
    c = minidl.randn(4, 6)
    with autocast("cuda"):
        assert (x @ x.T).dtype == minidl.float16 and (x @ x.T).softmax(1).dtype == minidl.float32 and x.half().exp().dtype == minidl.float32
        assert (c @ c.T).dtype == minidl.float32                    # the CPU has no autocast here
        assert minidl.is_autocast_enabled("cuda") and not minidl.is_autocast_enabled("cpu")
    assert minidl.get_autocast_dtype("cuda") == minidl.float16 and minidl.get_autocast_dtype("cpu") == minidl.bfloat16


def test_autocast_arguments_are_checked_as_pytorch_checks_them():
    with pytest.raises(RuntimeError, match="unsupported autocast device_type 'tpu'"): autocast("tpu")
    with pytest.warns(UserWarning, match="target dtype float64 is not supported"):
        ac = autocast("cpu", dtype=minidl.float64)
    with ac: assert (minidl.randn(2, 2) @ minidl.randn(2, 2)).dtype == minidl.float32


def test_gradients_reach_float32_weights_in_float32_and_backward_runs_without_autocast():
    minidl.manual_seed(0)
    lin = nn.Linear(5, 3)
    with autocast("cpu"):
        out = lin(minidl.randn(4, 5))
        loss = out.float().pow(2).sum()
        loss.backward()                                              # inside the block: backward still uses the forward's dtypes
    assert lin.weight.grad.dtype == minidl.float32 and lin.bias.grad.dtype == minidl.float32


def test_gradient_scaler_matches_pytorchs_with_clipping_and_two_optimizers():
    mine, theirs = GradScaler("cpu", init_scale=2.0**10, growth_interval=2), torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    w1, w2 = minidl.tensor([1.0, -2.0], requires_grad=True), minidl.tensor([0.5], requires_grad=True)
    t1, t2 = torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    o1, o2, p1, p2 = optim.SGD([w1], lr=0.1, momentum=0.9), optim.Adam([w2], lr=0.1), torch.optim.SGD([t1], lr=0.1, momentum=0.9), torch.optim.Adam([t2], lr=0.1)
    for g in [3.0, float("inf"), 0.5, 100.0, float("nan"), 1.0, 2.0, 0.1]:
        mine.scale((w1 * g).sum() + w2.sum() * min(g, 1.0)).backward()
        theirs.scale((t1 * g).sum() + t2.sum() * min(g, 1.0)).backward()
        mine.unscale_(o1); theirs.unscale_(p1)
        nn.utils.clip_grad_norm_([w1], 1.0); torch.nn.utils.clip_grad_norm_([t1], 1.0)
        for s, o in ((mine, o1), (mine, o2), (theirs, p1), (theirs, p2)): s.step(o)
        mine.update(); theirs.update()
        assert mine.state_dict() == theirs.state_dict()
        np.testing.assert_allclose(np.concatenate([w1.detach().numpy(), w2.detach().numpy()]),
                                   np.concatenate([t1.detach().numpy(), t2.detach().numpy()]), rtol=1e-4, atol=1e-5)   # float32 Adam
        for o in (o1, o2, p1, p2): o.zero_grad()


def test_gradient_scaler_state_dict_update_and_disabled_behaviour():
    s = GradScaler("cpu", init_scale=8.0)
    assert s.get_scale() == 8.0 and s.state_dict()["_growth_tracker"] == 0
    w = minidl.tensor([1.0], requires_grad=True)
    s.scale(w.sum()).backward(); s.update(new_scale=3.0); assert s.get_scale() == 3.0
    with pytest.raises(ValueError, match="new_scale should be a float or a 1-element tensor"): s.update(new_scale=minidl.ones(2))
    t = GradScaler("cpu"); t.load_state_dict(s.state_dict()); assert t.state_dict() == s.state_dict()
    off = GradScaler("cpu", enabled=False)
    assert off.state_dict() == {} and off.get_scale() == 1.0 and off.scale(w) is w
    with pytest.raises(RuntimeError, match="The source state dict is empty"): GradScaler("cpu").load_state_dict({})
    with pytest.raises(RuntimeError, match="No inf checks were recorded prior to update"):
        u = GradScaler("cpu"); u.scale(w.sum()); u.update()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        h = minidl.tensor([1.0]).half().requires_grad_(); h.sum().backward(); v = GradScaler("cpu"); v.scale(h.sum()); v.unscale_(optim.SGD([h], lr=0.1))

def test_cuda_autocast_and_scaler_switch_themselves_off_without_a_cuda_device(monkeypatch):
    import minidl.amp
    monkeypatch.setattr(minidl.amp, "_cuda_usable", lambda: False)
    with pytest.warns(UserWarning, match="GradScaler is enabled, but CUDA is not available. Disabling"): assert not GradScaler().is_enabled()
    with pytest.warns(UserWarning, match="device_type of 'cuda', but CUDA is not available"): assert not autocast("cuda").enabled


def test_training_only_works_with_loss_scaling_when_gradients_underflow():
    minidl.manual_seed(0)
    X, w_true = minidl.randn(256, 32), minidl.randn(32, 1)
    Y = X @ w_true
    def run(scaler):
        minidl.manual_seed(0); model = nn.Linear(32, 1, bias=False); opt = optim.Adam(model.parameters(), lr=0.05); first = None
        for _ in range(60):
            with autocast("cpu", dtype=minidl.float16): mse = F.mse_loss(model(X), Y)
            first = first or mse.item()
            loss = 1e-8 * mse
            if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
            else: loss.backward(); opt.step()
            opt.zero_grad()
        return first, mse.item()
    first, last = run(None)
    assert last == first
    first, last = run(GradScaler("cpu"))
    assert last < 0.05 * first


def test_mixed_precision_lenet_is_within_a_point_of_float32_and_skips_steps_with_inf():
    train_ds, valid_ds = minidl.data.digits(28)
    accs = {}
    for name, cbs in [("float32", []), ("fp16", [MixedPrecision(minidl.float16)]), ("bf16", [MixedPrecision(minidl.bfloat16)])]:
        minidl.manual_seed(0)
        learn = Learner(create_model("lenet", (1, 28, 28), 10), DataLoaders.from_datasets(train_ds, valid_ds, batch_size=64, seed=0),
                        F.cross_entropy, lr=2e-3, cbs=cbs, metrics=[accuracy])
        learn.fit(4)
        accs[name] = learn.recorder.values[-1]["accuracy"]
    assert accs["float32"] > 0.9
    assert abs(accs["fp16"] - accs["float32"]) <= 0.01 and abs(accs["bf16"] - accs["float32"]) <= 0.015, accs

    class PoisonOnce(Callback):              # an inf gradient in the second batch: that step is skipped and the scale halves
        order = 5
        def after_backward(self):
            if self.learn.train_iter == 1: next(self.learn.model.parameters()).grad.fill_(math.inf)
    mp = MixedPrecision(minidl.float16)
    learn = Learner(create_model("lenet", (1, 28, 28), 10), DataLoaders.from_datasets(train_ds, valid_ds, batch_size=64, seed=0),
                    F.cross_entropy, cbs=[mp, PoisonOnce()])
    learn.fit(1)
    assert mp.scaler.get_scale() == 2.0**15 and all(np.isfinite(p.detach().numpy()).all() for p in learn.model.parameters())

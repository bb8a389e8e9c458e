"""Tensors on the CUDA device (numba's simulator when there is no GPU), beyond the op suite (tests/test_op_suite.py):
losses, BatchNorm, dropout, optimizers and whole training steps against the CPU; copies between host and device
counted; errors for mixed devices."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import gpu
from minidl.core import manual_seed
from .op_suite import inputs, same_as_cpu as _same


def test_bad_class_target_is_reported_at_the_next_copy_to_the_host():
    x = minidl.randn(3, 4, device="cuda")
    loss = F.cross_entropy(x, minidl.tensor([0, 4, 1], device="cuda"))        # 4 is out of range: the check runs on the device
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"): loss.item()
    assert np.isfinite(F.cross_entropy(x, minidl.tensor([0, 3, 1], device="cuda")).item())


def test_mixing_devices_raises_an_error_naming_both():
    a, b = minidl.randn(2, 3), minidl.randn(2, 3, device="cuda")
    for op in (lambda: a + b, lambda: b * a, lambda: b @ a.T, lambda: minidl.where(a > 0, b, b), lambda: minidl.cat([a, b])):
        with pytest.raises(RuntimeError, match="cuda:0 and cpu"): op()
    with pytest.raises(RuntimeError, match="input is on cuda:0 but target is on cpu"):
        F.cross_entropy(b, minidl.tensor([0, 1]))
    assert (b + 1.5).device == "cuda" and (b * minidl.tensor(2.0)).device == "cuda"   # numbers and 0-d CPU tensors may join


def test_tensor_device_api():
    x = minidl.arange(6, dtype="float32").reshape(2, 3)
    y = x.to("cuda")
    assert x.device == "cpu" and y.device == "cuda" and y.cuda() is y and x.to("cpu") is x
    assert y.cpu().tolist() == x.tolist() and repr(y).endswith("device='cuda:0')")
    assert y.to("cuda", "float64").dtype == minidl.float64 and y.to(x).device == "cpu"
    for make in (lambda: minidl.zeros(2, device="cuda"), lambda: minidl.randn(2, device="cuda"), lambda: minidl.zeros_like(y),
                 lambda: minidl.full((2,), 3.0, device="cuda"), lambda: minidl.tensor([1, 2], device="cuda:0")):
        assert make().device == "cuda"
    with pytest.raises(TypeError, match=r"Use Tensor.cpu\(\)"): y.numpy()
    with pytest.raises(RuntimeError, match="minidl drives one GPU"): x.to("cuda:1")
    assert y.sum().item() == 15.0 and float(y[1, 2]) == 5.0 and bool(y[0, 1] > 0)


def test_module_to_moves_parameters_in_place_and_back():
    manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = list(m.parameters())
    m.to("cuda")
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert all(t.device == "cuda" for t in list(m.parameters()) + list(m.buffers()))
    out = m(minidl.randn(5, 3, device="cuda"))
    assert out.device == "cuda" and m[1].running_mean.device == "cuda"
    m.cpu()
    assert all(t.device == "cpu" for t in list(m.parameters()) + list(m.buffers()))


def _mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


@pytest.mark.parametrize("make_opt", [lambda p: minidl.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                      lambda p: minidl.optim.SGD(p, lr=0.1),
                                      lambda p: minidl.optim.Adam(p, lr=0.01, amsgrad=True),
                                      lambda p: minidl.optim.AdamW(p, lr=0.01)])
def test_training_steps_match_cpu_and_copy_only_the_batch(make_opt):
    manual_seed(1)
    cpu_model = _mlp(); dev_model = _mlp()
    dev_model.load_state_dict(cpu_model.state_dict()); dev_model.to("cuda")
    cpu_opt, dev_opt = make_opt(cpu_model.parameters()), make_opt(dev_model.parameters())
    X, Y = minidl.randn(12, 6), minidl.randint(0, 3, (12,))
    for i in range(3):
        xb, yb = X[i * 4:(i + 1) * 4], Y[i * 4:(i + 1) * 4]
        loss = F.cross_entropy(cpu_model(xb), yb); loss.backward(); cpu_opt.step(); cpu_opt.zero_grad()
        before = dict(gpu.copies)
        dloss = F.cross_entropy(dev_model(xb.to("cuda")), yb.to("cuda")); dloss.backward(); dev_opt.step(); dev_opt.zero_grad()
        assert {k: gpu.copies[k] - before[k] for k in before} == {"to_device": 2, "to_host": 0}
        np.testing.assert_allclose(dloss.item(), loss.item(), rtol=1e-5)
    for p, q in zip(cpu_model.parameters(), dev_model.parameters()):
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_learner_trains_on_the_model_device_like_on_the_cpu():
    from minidl.data import TensorDataset
    from minidl.learner import DataLoaders, Learner, accuracy
    ds = TensorDataset(minidl.randn(32, 6), minidl.randint(0, 3, (32,)))
    runs = []
    for device in ("cpu", "cuda"):
        manual_seed(2)
        learn = Learner(_mlp().to(device), DataLoaders.from_datasets(ds, ds, batch_size=8, seed=0), lr=0.01, metrics=[accuracy])
        learn.fit(2)
        runs.append(learn.recorder)
    np.testing.assert_allclose(runs[1].losses, runs[0].losses, rtol=1e-5)
    for a, b in zip(runs[0].values, runs[1].values):
        np.testing.assert_allclose([b["valid_loss"], b["accuracy"]], [a["valid_loss"], a["accuracy"]], rtol=1e-5)


def test_numpy_on_device_memory_and_boolean_masks_raise_a_clear_error():
    x = minidl.randn(3, 4, device="cuda")
    with pytest.raises(TypeError, match=r"can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu\(\)"):
        np.median(x._a)                                 # a device array is no NumPy look-alike: nothing is copied silently
    with pytest.raises(IndexError, match=r"boolean masks are not supported on cuda:0 arrays .* use where\(\)"):
        x[x > 0]


def test_batch_norm_2d_matches_cpu_in_training_and_eval():
    manual_seed(0)
    bn_c = nn.BatchNorm2d(3); bn_d = nn.BatchNorm2d(3).to("cuda")
    _same(lambda x: bn_c(x) if x.device.type == "cpu" else bn_d(x), (4, 3, 3, 2))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(bn_d, name).cpu().numpy(), getattr(bn_c, name).numpy(), rtol=1e-9)
    bn_c.eval(); bn_d.eval()
    _same(lambda x: bn_c(x) if x.device.type == "cpu" else bn_d(x), (2, 3, 3, 2))


def test_argmax_matches_cpu():
    x = np.random.default_rng(0).standard_normal((5, 4))
    for dim in (0, 1):
        np.testing.assert_array_equal(minidl.tensor(x, device="cuda").argmax(dim).cpu().numpy(), minidl.tensor(x).argmax(dim).numpy())


def test_dropout_on_the_device_keeps_about_1_minus_p_and_repeats_under_manual_seed():
    x = minidl.ones(2000, device="cuda", requires_grad=True)
    copies = dict(gpu.copies)
    y = F.dropout(x, 0.4)
    assert dict(gpu.copies) == copies                          # the mask is drawn on the device
    y.sum().backward()
    yh = y.detach().cpu().numpy(); kept = yh != 0
    assert 0.55 < kept.mean() < 0.65
    np.testing.assert_allclose(yh[kept], 1 / 0.6, rtol=1e-6)
    np.testing.assert_array_equal(x.grad.cpu().numpy(), yh)
    draws = []
    for _ in range(2):
        manual_seed(5); draws.append(F.dropout(minidl.ones(64, device="cuda"), 0.5).cpu().numpy())
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(F.dropout(minidl.ones(64, device="cuda"), 0.5).cpu().numpy(), draws[0])
    nn_drop = nn.Dropout(0.4).to("cuda").eval()
    np.testing.assert_array_equal(nn_drop(x).detach().cpu().numpy(), np.ones(2000))


@pytest.mark.parametrize("make_opt", [lambda p: minidl.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
                                      lambda p: minidl.optim.RMSprop(p, lr=0.01),
                                      lambda p: minidl.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=1e-3)])
def test_rmsprop_and_adagrad_steps_match_cpu(make_opt):
    test_training_steps_match_cpu_and_copy_only_the_batch(make_opt)


def test_cnn_training_steps_match_cpu_and_copy_only_the_batch():
    def cnn():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 4, 3, groups=4, padding=1, padding_mode="reflect"), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    manual_seed(3)
    cpu_model = cnn(); dev_model = cnn()
    dev_model.load_state_dict(cpu_model.state_dict()); dev_model.to("cuda")
    cpu_opt, dev_opt = minidl.optim.SGD(cpu_model.parameters(), lr=0.1, momentum=0.9), minidl.optim.SGD(dev_model.parameters(), lr=0.1, momentum=0.9)
    X, Y = minidl.randn(9, 1, 6, 6), minidl.randint(0, 3, (9,))
    for i in range(3):
        xb, yb = X[i * 3:(i + 1) * 3], Y[i * 3:(i + 1) * 3]
        loss = F.cross_entropy(cpu_model(xb), yb); loss.backward(); cpu_opt.step(); cpu_opt.zero_grad()
        before = dict(gpu.copies)
        dloss = F.cross_entropy(dev_model(xb.to("cuda")), yb.to("cuda")); dloss.backward(); dev_opt.step(); dev_opt.zero_grad()
        moved = {k: gpu.copies[k] - before[k] for k in before}
        if i: assert moved == {"to_device": 2, "to_host": 0}    # the first step also uploads the pool's window bounds, once
        np.testing.assert_allclose(dloss.item(), loss.item(), rtol=1e-5)
    for p, q in zip(cpu_model.parameters(), dev_model.parameters()):
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_device_optimizer_state_saves_loads_and_resumes_like_an_uninterrupted_run(tmp_path):
    manual_seed(4)
    model = _mlp().to("cuda"); opt = minidl.optim.Adam(model.parameters(), lr=0.01)
    X, Y = minidl.randn(8, 6, device="cuda"), minidl.randint(0, 3, (8,), device="cuda")
    def step(m, o):
        F.cross_entropy(m(X), Y).backward(); o.step(); o.zero_grad()
    step(model, opt)
    sd = opt.state_dict()
    assert all(str(v.device) == "cuda:0" for s in sd["state"].values() for v in s.values() if isinstance(v, minidl.Tensor))
    minidl.save({"model": model.state_dict(), "opt": sd}, tmp_path / "ckpt.safetensors")
    ckpt = minidl.load(tmp_path / "ckpt.safetensors")
    resumed = _mlp().to("cuda"); resumed.load_state_dict(ckpt["model"])
    ropt = minidl.optim.Adam(resumed.parameters(), lr=0.01); ropt.load_state_dict(ckpt["opt"])
    step(model, opt); step(resumed, ropt)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert str(q.device) == "cuda:0"
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().cpu().numpy(), rtol=1e-6)


def test_device_array_keeps_no_numpy_array_over_memory_it_does_not_own():
    "Its old `layout` was an ndarray over one element with the strides of the whole array: reading it crashed the process."
    d = minidl.zeros(400, 500, device="cuda")._a
    assert [s for s in type(d).__slots__ if isinstance(getattr(d, s), np.ndarray)] == []
    v = d[1:, ::2].T                                   # views still share the buffer, with NumPy's strides
    assert v.shape == (250, 399) and v.strides == (8, 2000) and v.offset == 500 and v.buf is d.buf
    assert not v.flags.c_contiguous and d.flags.c_contiguous


def test_clip_grad_value_works_on_the_device():
    (w_cpu,), (w_dev,) = inputs([(3, 4)], "cpu"), inputs([(3, 4)], "cuda")
    for w in (w_cpu, w_dev): (w * 3).sum().backward(); minidl.optim.clip_grad_value_([w], 1.5)
    assert str(w_dev.grad.device) == "cuda:0"
    np.testing.assert_array_equal(w_dev.grad.cpu().numpy(), w_cpu.grad.numpy())
    np.testing.assert_array_equal(w_cpu.grad.numpy(), np.full((3, 4), 1.5))


@pytest.mark.parametrize("shape,normalized,affine", [((3, 5, 8), (8,), True), ((4, 2, 6), (2, 6), True), ((5, 7), (7,), False)], ids=str)
def test_layer_norm_kernel_on_the_device_matches_the_cpu_forward_and_backward(shape, normalized, affine):
    minidl.manual_seed(3)
    x = minidl.randn(*shape, dtype="float64")
    w, b = (minidl.randn(*normalized, dtype="float64") for _ in range(2))
    results = []
    for dev in ("cpu", "cuda"):
        leaf = lambda t: minidl.tensor(t.numpy(), device=dev, requires_grad=True)
        xd = leaf(x)
        wd, bd = (leaf(w), leaf(b)) if affine else (None, None)
        y = F.layer_norm(xd, normalized, wd, bd)
        (y * y).sum().backward()
        results.append([t.cpu().detach().numpy() for t in [y, xd.grad] + ([wd.grad, bd.grad] if affine else [])])
    for a, c in zip(*results): np.testing.assert_allclose(c, a, rtol=1e-10, atol=1e-12)

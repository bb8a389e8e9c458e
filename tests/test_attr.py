"minidl.attr against captum on identical weights: every method and option; completeness; batched equals one at a time."
import numpy as np
import pytest
import torch
import captum.attr as C

import minidl
import minidl.nn as nn
from minidl import attr as A


@pytest.fixture(scope="module")
def twins():
    minidl.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10))
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(96, 10))
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    return net, tnet, minidl.tensor(x), torch.tensor(x, requires_grad=True), [1, 4, 7]


def same(mine, theirs, tol=1e-4):
    m, t = mine.detach().numpy(), theirs.detach().numpy()
    scale = max(np.abs(t).max(), 1e-12)
    np.testing.assert_allclose(m / scale, t / scale, atol=tol)


def test_gradient_methods(twins):
    net, tnet, x, tx, tg = twins
    same(A.Saliency(net).attribute(x, target=tg), C.Saliency(tnet).attribute(tx, target=tg))
    same(A.Saliency(net).attribute(x, target=3, abs=False), C.Saliency(tnet).attribute(tx, target=3, abs=False))
    same(A.InputXGradient(net).attribute(x, target=minidl.tensor(tg)), C.InputXGradient(tnet).attribute(tx, target=torch.tensor(tg)))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_every_rule_and_its_convergence_delta(twins, method):
    net, tnet, x, tx, tg = twins
    a, d = A.IntegratedGradients(net).attribute(x, target=tg, n_steps=20, method=method, return_convergence_delta=True)
    b, e = C.IntegratedGradients(tnet).attribute(tx, target=tg, n_steps=20, method=method, return_convergence_delta=True)
    same(a, b); same(d, e, 1e-3)


def test_integrated_gradients_options(twins):
    net, tnet, x, tx, tg = twins
    same(A.IntegratedGradients(net).attribute(x, baselines=0.5, target=tg, internal_batch_size=7),
         C.IntegratedGradients(tnet).attribute(tx, baselines=0.5, target=tg, internal_batch_size=7))
    same(A.IntegratedGradients(net, multiply_by_inputs=False).attribute(x, target=tg), C.IntegratedGradients(tnet, multiply_by_inputs=False).attribute(tx, target=tg))
    base = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    same(A.IntegratedGradients(net).attribute(x, baselines=minidl.tensor(base), target=tg), C.IntegratedGradients(tnet).attribute(tx, baselines=torch.tensor(base), target=tg))
    attr, delta = A.IntegratedGradients(net).attribute(x, target=tg, n_steps=200, return_convergence_delta=True)
    assert np.abs(delta.numpy()).max() < 1e-3                         # completeness: the attributions add up to F(x) - F(0)
    with pytest.raises(ValueError, match="needs n_steps >= 2"): A.IntegratedGradients(net).attribute(x, target=tg, n_steps=1, method="riemann_left")


def test_grad_cam_every_option_and_interpolation(twins):
    net, tnet, x, tx, tg = twins
    for kw in ({}, {"relu_attributions": True}, {"attribute_to_layer_input": True}, {"attr_dim_summation": False}):
        same(A.LayerGradCam(net, net[2]).attribute(x, target=tg, **kw), C.LayerGradCam(tnet, tnet[2]).attribute(tx, target=tg, **kw))
    g, tgc = A.LayerGradCam(net, net[2]).attribute(x, target=tg), C.LayerGradCam(tnet, tnet[2]).attribute(tx, target=tg)
    for mode in ("nearest", "bilinear"):
        same(A.LayerAttribution.interpolate(g, (8, 8), mode), C.LayerAttribution.interpolate(tgc, (8, 8), mode))
    assert not net[2]._forward_hooks and not net[2]._forward_pre_hooks          # no hook left behind


def test_occlusion_windows_strides_baselines_and_batched_perturbations(twins):
    net, tnet, x, tx, tg = twins
    same(A.Occlusion(net).attribute(x, sliding_window_shapes=(1, 3, 3), target=tg), C.Occlusion(tnet).attribute(tx, sliding_window_shapes=(1, 3, 3), target=tg))
    kw = dict(sliding_window_shapes=(1, 2, 3), strides=(1, 2, 1), baselines=0.3, target=tg)
    same(A.Occlusion(net).attribute(x, perturbations_per_eval=4, **kw), C.Occlusion(tnet).attribute(tx, perturbations_per_eval=4, **kw))
    same(A.Occlusion(net).attribute(x, **kw), A.Occlusion(net).attribute(x, perturbations_per_eval=5, **kw), 1e-6)


def test_noise_tunnel_without_noise_is_the_method_and_its_statistics_are_consistent(twins):
    net, _, x, _, tg = twins
    sal = A.Saliency(net).attribute(x, target=tg)
    same(A.NoiseTunnel(A.Saliency(net)).attribute(x, nt_samples=3, stdevs=0.0, target=tg), sal, 1e-6)
    nt = A.NoiseTunnel(A.Saliency(net))
    minidl.manual_seed(0); m = nt.attribute(x, nt_type="smoothgrad", nt_samples=6, stdevs=0.3, target=tg, abs=False)
    minidl.manual_seed(0); sq = nt.attribute(x, nt_type="smoothgrad_sq", nt_samples=6, nt_samples_batch_size=4, stdevs=0.3, target=tg, abs=False)
    minidl.manual_seed(0); var = nt.attribute(x, nt_type="vargrad", nt_samples=6, stdevs=0.3, target=tg, abs=False)
    np.testing.assert_allclose(var.numpy(), sq.numpy() - m.numpy() ** 2, atol=1e-5)        # Var = E[a²] - E[a]², same noise
    ig, delta = A.NoiseTunnel(A.IntegratedGradients(net)).attribute(x, nt_samples=2, stdevs=0.1, target=tg, n_steps=8, return_convergence_delta=True)
    assert ig.shape == x.shape and delta.shape == (6,)


def test_batched_attributions_equal_one_example_at_a_time(twins):
    net, _, x, _, tg = twins
    for method, kw in ((A.Saliency(net), {}), (A.IntegratedGradients(net), {"n_steps": 16}), (A.Occlusion(net), {"sliding_window_shapes": (1, 3, 3)})):
        whole = method.attribute(x, target=tg, **kw)
        for i in range(3):
            np.testing.assert_allclose(method.attribute(x[i:i + 1], target=tg[i], **kw).numpy(), whole[i:i + 1].numpy(), rtol=1e-5, atol=1e-6)


def test_two_inputs_and_additional_forward_args(twins):
    net, tnet, x, tx, tg = twins
    def f(a, b, scale): return net(a + b) * scale
    def tf(a, b, scale): return tnet(a + b) * scale
    y = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    mine = A.IntegratedGradients(f).attribute((x, minidl.tensor(y)), target=tg, additional_forward_args=(2.0,), n_steps=10)
    theirs = C.IntegratedGradients(tf).attribute((tx, torch.tensor(y)), target=tg, additional_forward_args=(2.0,), n_steps=10)
    for m, t in zip(mine, theirs): same(m, t)


def test_closed_forms():
    "Cases whose answer is known without captum: IG of a linear model, Grad-CAM when every gradient is 1, occlusion of a sum."
    w = minidl.tensor([[2.0, -1.0, 0.5]])
    lin = lambda v: v @ w.T
    x = minidl.tensor([[1.0, 2.0, 3.0]])
    for method in ("gausslegendre", "riemann_middle", "riemann_right"):        # the integrand is constant: every rule whose weights sum to 1 is exact
        np.testing.assert_allclose(A.IntegratedGradients(lin).attribute(x, n_steps=4, method=method).numpy(), [[2.0, -2.0, 1.5]], rtol=1e-6)
    conv = nn.Conv2d(1, 2, 2, bias=False)
    with minidl.no_grad(): conv.weight.fill_(1.0)
    f = lambda v: conv(v).sum((1, 2, 3)).unsqueeze(1)                          # d out / d A = 1 everywhere: each channel weighs 1
    img = minidl.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_allclose(A.LayerGradCam(f, conv).attribute(img, target=0).numpy(), 2 * conv(img).detach().numpy()[:, :1], rtol=1e-6)
    total = lambda v: v.sum((1, 2, 3)).unsqueeze(1)
    a, drops, counts = np.arange(9.0).reshape(3, 3), np.zeros((3, 3)), np.zeros((3, 3))
    for i in range(2):
        for j in range(2): drops[i:i + 2, j:j + 2] += a[i:i + 2, j:j + 2].sum(); counts[i:i + 2, j:j + 2] += 1   # a window's drop: its sum
    np.testing.assert_allclose(A.Occlusion(total).attribute(img, sliding_window_shapes=(1, 2, 2), target=0).numpy()[0, 0], drops / counts, rtol=1e-6)

"Module and tensor hooks against PyTorch's: what each hook sees, what a returned value replaces, and that removal leaves no trace."
import numpy as np
import pytest
import torch

import minidl
import minidl.nn as nn


def twin_nets():
    minidl.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    tnet = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 5))
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    return net, tnet, minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)


def test_full_backward_hooks_see_and_replace_what_pytorchs_do():
    net, tnet, x, tx = twin_nets()
    got, want = {}, {}
    def record(store, i):
        def hook(m, gin, gout):
            store[i] = ([None if g is None else g.detach().numpy().copy() for g in gin], [g.detach().numpy().copy() for g in gout])
            if i == 3: return tuple(None if g is None else g * 2 for g in gin)        # double what flows back from the last layer
        return hook
    for i, (m, tm) in enumerate(zip(net, tnet)):
        m.register_full_backward_hook(record(got, i)); tm.register_full_backward_hook(record(want, i))
    (net(x) ** 2).sum().backward(); (tnet(tx) ** 2).sum().backward()
    assert sorted(got) == sorted(want) == [0, 1, 2, 3]
    for i in got:
        for mine, theirs in zip(got[i][0] + got[i][1], want[i][0] + want[i][1]):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for m in (net[0].weight, net[3].weight):                       # the parameters' gradients are not the hooks' business
        assert m.grad is not None


def test_forward_hooks_and_pre_hooks_with_kwargs_and_always_call():
    lin = nn.Linear(3, 2)
    calls = []
    lin.register_forward_pre_hook(lambda m, args, kwargs: ((args[0] + 1,), kwargs), with_kwargs=True)
    lin.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs) or out * 0, with_kwargs=True)
    assert (lin(minidl.ones(1, 3)).detach().numpy() == 0).all() and calls == [{}]

    class Boom(nn.Module):
        def forward(self, x): raise ValueError("boom")
    b, seen = Boom(), []
    b.register_forward_hook(lambda m, args, out: seen.append(out), always_call=True)
    b.register_forward_hook(lambda m, args, out: seen.append("not always"))
    with pytest.raises(ValueError, match="boom"): b(minidl.ones(1))
    assert seen == [None]


def test_tensor_hooks_match_pytorch_on_leaves_and_intermediates():
    x, tx = minidl.tensor([1.0, -2.0, 3.0], requires_grad=True), torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    outs = []
    for t, store in ((x, []), (tx, [])):
        h = t * t
        h.register_hook(lambda g, store=store: store.append(g.detach().numpy().copy()))
        t.register_hook(lambda g: g + 1)
        (h.exp().sum() + h.sum()).backward()
        outs.append((store, t.grad.detach().numpy()))
    np.testing.assert_allclose(outs[0][0][0], outs[1][0][0], rtol=1e-6)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-6)


def test_a_module_with_two_inputs_that_need_gradients_is_refused_with_a_reason():
    class Add(nn.Module):
        def forward(self, a, b): return a + b
    m = Add(); m.register_full_backward_hook(lambda *a: None)
    a, b = minidl.ones(2, requires_grad=True), minidl.ones(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="at most one tensor input that requires grad; this call has 2"): m(a, b)
    assert m(a, minidl.ones(2)).requires_grad                       # one that needs a gradient: fine


def test_post_accumulate_grad_hooks_run_once_per_leaf_with_the_accumulated_grad_as_pytorchs():
    net, tnet, x, tx = twin_nets()
    got, want = [], []
    for (name, p), (_, tp) in zip(net.named_parameters(), tnet.named_parameters()):
        p.register_post_accumulate_grad_hook(lambda p, name=name: got.append((name, p.grad.numpy().copy())))
        tp.register_post_accumulate_grad_hook(lambda p, name=name: want.append((name, p.grad.numpy().copy())))
    for _ in range(2):                                   # the second pass adds into .grad: the hooks see the sum
        (net(x) ** 2).sum().backward(); (tnet(tx) ** 2).sum().backward()
    for calls in (got, want):                            # each leaf once per pass, the last layer's before the first's
        assert [n[0] for n, _ in calls] == ["3", "3", "0", "0"] * 2 and len({n for n, _ in calls[:4]}) == 4
    for i in (0, 4):
        g, w = dict(got[i:i + 4]), dict(want[i:i + 4])
        for name in w: np.testing.assert_allclose(g[name], w[name], rtol=1e-4, atol=1e-5)

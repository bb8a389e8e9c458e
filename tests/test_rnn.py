"""Lesson 18's recurrent modules against PyTorch's (when installed): PyTorch's weights loaded by name, then outputs,
final states and the gradients of the input, the initial states and every parameter compared, over a grid of options;
without PyTorch, against float64 central differences. The cells too, and on cuda (numba's simulator without a GPU)."""
import itertools

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.autograd import gradcheck

try: import torch
except ImportError: torch = None

GRID = [dict(mode=m, num_layers=l, bidirectional=b, batch_first=bf, init=i, unbatched=u)
        for m, l, b, bf, i, u in itertools.product(["LSTM", "GRU", "RNN", "RNN_relu"], [1, 2], [False, True], [False, True], [False, True], [False])]
GRID += [dict(mode=m, num_layers=2, bidirectional=True, batch_first=False, init=True, unbatched=True) for m in ("LSTM", "GRU", "RNN")]
GRID += [dict(mode="LSTM", num_layers=l, bidirectional=b, batch_first=bf, init=i, unbatched=u, proj_size=2)      # h projected to 2 of the 4 features
         for l, b, bf, i, u in ((1, False, False, False, False), (2, True, True, True, False), (2, False, False, True, False), (2, True, False, True, True))]


def _make(lib, cfg, I=3, H=4):
    nn_ = torch.nn if lib is torch else nn
    kw = dict(num_layers=cfg["num_layers"], bidirectional=cfg["bidirectional"], batch_first=cfg["batch_first"])
    if cfg.get("proj_size"): kw["proj_size"] = cfg["proj_size"]
    if cfg["mode"].startswith("RNN"): return nn_.RNN(I, H, nonlinearity="relu" if cfg["mode"] == "RNN_relu" else "tanh", **kw)
    return getattr(nn_, cfg["mode"])(I, H, **kw)


def _inputs(cfg, T=5, N=2, I=3, H=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, I) if cfg["unbatched"] else ((N, T, I) if cfg["batch_first"] else (T, N, I)))
    layers = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    sizes = (cfg.get("proj_size") or H, H)[:2 if cfg["mode"] == "LSTM" else 1]          # h (projected, if asked), then c
    states = [rng.standard_normal((layers, size) if cfg["unbatched"] else (layers, N, size)) for size in sizes] if cfg["init"] else None
    return x, states


def _run(lib, model, x, states):
    t = (lambda a: torch.tensor(a, requires_grad=True)) if lib is torch else (lambda a: minidl.tensor(a, requires_grad=True))
    xt = t(x)
    st = None if states is None else [t(s) for s in states]
    hx = None if st is None else (tuple(st) if len(st) == 2 else st[0])
    out, h = model(xt, hx)
    finals = list(h) if isinstance(h, tuple) else [h]
    w = np.random.default_rng(1)
    loss = sum((o * (torch.tensor if lib is torch else minidl.tensor)(w.standard_normal(tuple(o.shape)))).sum() for o in [out] + finals)
    loss.backward()
    grads = [xt.grad] + ([s.grad for s in st] if st else []) + [p.grad for _, p in model.named_parameters()]
    return [a.detach().numpy() for a in [out] + finals], [g.numpy() for g in grads]


@pytest.mark.skipif(torch is None, reason="compared with PyTorch's modules; without it, test_gradients_by_central_differences checks them")
@pytest.mark.parametrize("cfg", GRID, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_matches_pytorch_with_its_weights(cfg):
    tm = _make(torch, cfg).double()
    mm = _make(minidl, cfg).double()
    mm.load_state_dict({k: minidl.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    assert [n for n, _ in mm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    x, states = _inputs(cfg)
    (mo, mg), (to, tg) = _run(minidl, mm, x, states), _run(torch, tm, x, states)
    for a, b in zip(mo + mg, to + tg): np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,proj_size", [("LSTM", 0), ("LSTM", 2), ("GRU", 0), ("RNN", 0)])
def test_gradients_by_central_differences(mode, proj_size):
    cfg = dict(mode=mode, num_layers=2, bidirectional=True, batch_first=True, init=False, unbatched=False, proj_size=proj_size)
    minidl.manual_seed(0)
    m = _make(minidl, cfg).double()
    x = minidl.randn(2, 4, 3, dtype="float64", requires_grad=True)
    assert gradcheck(lambda t: m(t)[0], [x])
    assert gradcheck(lambda w: m(x)[0], [m.weight_hh_l1_reverse])
    if proj_size: assert gradcheck(lambda w: m(x)[1][0], [m.weight_hr_l0])        # h_n, through the first layer's projection


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_match_pytorch(name):
    minidl.manual_seed(0)
    cell = getattr(nn, name)(3, 4).double()
    x, h = np.random.default_rng(2).standard_normal((2, 3)), np.random.default_rng(3).standard_normal((2, 4))
    hx = (minidl.tensor(h), minidl.tensor(h * 0.5)) if name == "LSTMCell" else minidl.tensor(h)
    out = cell(minidl.tensor(x), hx)
    if torch is None: return
    tcell = getattr(torch.nn, name)(3, 4).double()
    tcell.load_state_dict({k: torch.tensor(v.numpy()) for k, v in cell.state_dict().items()})
    thx = (torch.tensor(h), torch.tensor(h * 0.5)) if name == "LSTMCell" else torch.tensor(h)
    tout = tcell(torch.tensor(x), thx)
    for a, b in zip(out if isinstance(out, tuple) else [out], tout if isinstance(tout, tuple) else [tout]):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_lstm_on_cuda_matches_cpu(proj_size):
    minidl.manual_seed(0)
    layers = 1 if proj_size else 2                     # (a projected layer runs step by step: slow under the simulator)
    cpu = nn.LSTM(3, 4, num_layers=layers, batch_first=True, proj_size=proj_size).double()
    gpu = nn.LSTM(3, 4, num_layers=layers, batch_first=True, proj_size=proj_size).double()
    gpu.load_state_dict(cpu.state_dict()); gpu.to("cuda")
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    outs = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        xt = minidl.tensor(x, device=dev, requires_grad=True)
        y, (h, c) = m(xt)
        (y.sum() + c.sum()).backward()
        outs.append([y.detach().cpu().numpy(), xt.grad.cpu().numpy()] + [p.grad.cpu().numpy() for p in m.parameters()])
    for a, b in zip(*outs): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_the_fused_layer_and_cell_equal_the_composed_steps(monkeypatch):
    from minidl import rnn
    minidl.manual_seed(4)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True).double()
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    h0, c0 = (np.random.default_rng(k).standard_normal((4, 2, 4)) for k in (3, 4))
    def run():
        lstm.zero_grad()
        xt, ht, ct = (minidl.tensor(a, requires_grad=True) for a in (x, h0, c0))
        y, (h, c) = lstm(xt, (ht, ct))
        ((y * y).sum() + h.sum() + (c * c).sum()).backward()
        return [t.detach().numpy() for t in (y, h, c, xt.grad, ht.grad, ct.grad)] + [p.grad.numpy() for p in lstm.parameters()]
    fused = run()
    monkeypatch.setattr(rnn, "LAYERS", {})                                       # one op per step ...
    monkeypatch.setitem(rnn.CELLS, "LSTM", (rnn._lstm, 4))                       # ... and the cell as a dozen tensor ops
    composed = run()
    for a, b in zip(fused, composed): np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_second_derivatives_through_the_fused_lstm():
    from minidl.autograd import gradgradcheck
    minidl.manual_seed(5)
    lstm = nn.LSTM(2, 3, bidirectional=True).double()
    x = minidl.randn(4, 1, 2, dtype="float64", requires_grad=True)
    assert gradgradcheck(lambda x: lstm(x)[0], (x,))
    cell = nn.LSTMCell(2, 3).double()
    assert gradgradcheck(lambda x: cell(x)[1], (x[0],))


def test_lstm_cell_on_cuda_matches_cpu():
    minidl.manual_seed(6)
    cpu = nn.LSTMCell(3, 4).double()
    gpu = nn.LSTMCell(3, 4).double(); gpu.load_state_dict(cpu.state_dict()); gpu.to("cuda")
    x = np.random.default_rng(1).standard_normal((2, 3))
    outs = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        xt = minidl.tensor(x, device=dev, requires_grad=True)
        h, c = m(xt)
        (h.sum() + (c * c).sum()).backward()
        outs.append([h.detach().cpu().numpy(), c.detach().cpu().numpy(), xt.grad.cpu().numpy(), m.weight_hh.grad.cpu().numpy()])
    for a, b in zip(*outs): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_errors_name_what_was_wrong():
    with pytest.raises(RuntimeError, match="Expected hidden size \\(1, 2, 4\\), got \\(2, 2, 4\\)"): nn.GRU(3, 4)(minidl.randn(5, 2, 3), minidl.randn(2, 2, 4))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 3, got 2"): nn.LSTM(3, 4)(minidl.randn(5, 2, 2))
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"): nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size should be a positive integer or zero"): nn.LSTM(3, 4, proj_size=-1)
    with pytest.raises(RuntimeError, match="Expected hidden\\[0\\] size \\(1, 2, 2\\), got \\(1, 2, 4\\)"):
        nn.LSTM(3, 4, proj_size=2)(minidl.randn(5, 2, 3), (minidl.randn(1, 2, 4), minidl.randn(1, 2, 4)))
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"): nn.RNN(3, 4, nonlinearity="gelu")


@pytest.mark.parametrize("kw", [dict(), dict(batch_first=True, padding_value=-1.0), dict(batch_first=True, padding_side="left")], ids=str)
def test_pad_sequence_as_pytorch(kw):
    seqs = [np.random.default_rng(i).standard_normal((n, 3)) for i, n in enumerate((4, 1, 3))]
    mine = [minidl.tensor(s, requires_grad=True) for s in seqs]
    out = nn.utils.rnn.pad_sequence(mine, **kw)
    (out * out).sum().backward()
    if torch is None:
        assert out.shape == ((3, 4, 3) if kw.get("batch_first") else (4, 3, 3)); return
    theirs = [torch.tensor(s, requires_grad=True) for s in seqs]
    tout = torch.nn.utils.rnn.pad_sequence(theirs, **kw)
    (tout * tout).sum().backward()
    np.testing.assert_array_equal(out.detach().numpy(), tout.detach().numpy())
    for a, b in zip(mine, theirs): np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())

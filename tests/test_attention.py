"""Lesson 19's attention against PyTorch (when installed): `F.scaled_dot_product_attention` over its mask rules,
and `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` / `nn.TransformerEncoder` with PyTorch's weights loaded,
outputs and every gradient compared; without PyTorch, by float64 central differences."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.autograd import gradcheck

try: import torch
except ImportError: torch = None

RNG = np.random.default_rng(0)
Q, K, V = RNG.standard_normal((2, 3, 4, 8)), RNG.standard_normal((2, 3, 6, 8)), RNG.standard_normal((2, 3, 6, 5))
BOOL = RNG.random((4, 6)) > 0.3
BOOL_DEAD = BOOL.copy(); BOOL_DEAD[1] = False                          # a query that may attend nowhere
FLOAT = RNG.standard_normal((4, 6))

SDPA = {"plain": {}, "causal": dict(is_causal=True), "bool mask": dict(attn_mask=BOOL), "bool mask, a dead row": dict(attn_mask=BOOL_DEAD),
        "float mask": dict(attn_mask=FLOAT), "scale": dict(scale=0.3), "causal, scale": dict(is_causal=True, scale=2.0)}


def _to(lib, a, grad=True):
    if isinstance(a, np.ndarray) and a.dtype == bool: return (torch.tensor if lib is torch else minidl.tensor)(a)
    if isinstance(a, np.ndarray): return torch.tensor(a, requires_grad=grad) if lib is torch else minidl.tensor(a, requires_grad=grad)
    return a


@pytest.mark.parametrize("name", list(SDPA))
def test_sdpa(name):
    kw = SDPA[name]
    q, k, v = (_to(minidl, a) for a in (Q, K, V))
    out = F.scaled_dot_product_attention(q, k, v, **{n: _to(minidl, a) for n, a in kw.items()})
    assert not np.isnan(out.detach().numpy()).any()
    if torch is None:
        assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **{n: _to(minidl, x) for n, x in kw.items()}), [q, k, v]); return
    tq, tk, tv = (_to(torch, a) for a in (Q, K, V))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **{n: _to(torch, a) for n, a in kw.items()})
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = RNG.standard_normal(tout.shape)
    (out * minidl.tensor(w)).sum().backward(); (tout * torch.tensor(w)).sum().backward()
    for a, b in ((q, tq), (k, tk), (v, tv)): np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)


MHA = [dict(batch_first=False), dict(batch_first=True), dict(batch_first=True, attn_mask="causal"), dict(batch_first=False, attn_mask="float"),
       dict(batch_first=True, key_padding_mask=True), dict(batch_first=True, key_padding_mask=True, attn_mask="causal", average_attn_weights=False),
       dict(batch_first=False, unbatched=True, attn_mask="causal"), dict(batch_first=True, bias=False), dict(batch_first=True, attn_mask="per head")]


def _mha_inputs(cfg, L=5, N=3, E=8, H=2):
    x = RNG.standard_normal((L, E) if cfg.get("unbatched") else ((N, L, E) if cfg["batch_first"] else (L, N, E)))
    kw = {}
    if cfg.get("attn_mask") == "causal": kw["attn_mask"] = np.triu(np.ones((L, L), bool), 1)
    elif cfg.get("attn_mask") == "float": kw["attn_mask"] = RNG.standard_normal((L, L))
    elif cfg.get("attn_mask") == "per head": kw["attn_mask"] = RNG.random((N * H, L, L)) > 0.7
    if cfg.get("key_padding_mask"): pad = np.zeros((N, L), bool); pad[1, 3:] = True; kw["key_padding_mask"] = pad
    if "average_attn_weights" in cfg: kw["average_attn_weights"] = cfg["average_attn_weights"]
    return x, kw


@pytest.mark.skipif(torch is None, reason="compared with PyTorch's module; lesson 19 checks masks and gradients without it")
@pytest.mark.parametrize("cfg", MHA, ids=str)
def test_multihead_attention_matches_pytorch(cfg):
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=cfg["batch_first"], bias=cfg.get("bias", True)).double()
    mm = nn.MultiheadAttention(8, 2, batch_first=cfg["batch_first"], bias=cfg.get("bias", True)).double()
    mm.load_state_dict({k: minidl.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x, kw = _mha_inputs(cfg)
    res = []
    for lib, m in ((minidl, mm), (torch, tm)):
        xt = _to(lib, x)
        out, w = m(xt, xt, xt, **{k: _to(lib, v, grad=False) for k, v in kw.items()})
        (out.sum() + (w * w).sum()).backward()
        res.append([out.detach().numpy(), w.detach().numpy(), xt.grad.numpy()] + [p.grad.numpy() for _, p in m.named_parameters()])
    for a, b in zip(*res): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="compared with PyTorch's layers")
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_matches_pytorch(norm_first, activation):
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first)
    t_enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, **kw), 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False).double()
    m_enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, **kw), 2, norm=nn.LayerNorm(8)).double()
    m_enc.load_state_dict({k: minidl.tensor(v.detach().numpy()) for k, v in t_enc.state_dict().items()})
    x, mask = RNG.standard_normal((3, 5, 8)), np.triu(np.ones((5, 5), bool), 1)
    res = []
    for lib, m in ((minidl, m_enc), (torch, t_enc)):
        xt = _to(lib, x)
        y = m(xt, mask=_to(lib, mask), is_causal=True)
        (y * y).sum().backward()
        res.append([y.detach().numpy(), xt.grad.numpy()] + [p.grad.numpy() for _, p in m.named_parameters()])
    for a, b in zip(*res): np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_mha_on_cuda_matches_cpu():
    minidl.manual_seed(0)
    cpu = nn.MultiheadAttention(8, 2, batch_first=True).double()
    gpu = nn.MultiheadAttention(8, 2, batch_first=True).double()
    gpu.load_state_dict(cpu.state_dict()); gpu.to("cuda")
    x, mask = RNG.standard_normal((2, 4, 8)), np.triu(np.ones((4, 4), bool), 1)
    outs = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        xt = minidl.tensor(x, device=dev, requires_grad=True)
        y, w = m(xt, xt, xt, attn_mask=minidl.tensor(mask, device=dev))
        (y.sum() + w.sum()).backward()
        outs.append([y.detach().cpu().numpy(), xt.grad.cpu().numpy(), m.in_proj_weight.grad.cpu().numpy()])
    for a, b in zip(*outs): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("is_causal", [False, True])
def test_fused_attention_on_cuda_matches_cpu(is_causal):
    "No mask and no dropout: `ScaledDotProductAttention`, one op on both backends, with its written-out backward (L ≠ S too)."
    outs = []
    for dev in ("cpu", "cuda"):
        q, k, v = (minidl.tensor(a, device=dev, requires_grad=True) for a in (Q, K, V))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        assert y.grad_fn.name == "ScaledDotProductAttentionBackward"
        (y * y).sum().backward()
        outs.append([y.detach().cpu().numpy()] + [t.grad.cpu().numpy() for t in (q, k, v)])
    for a, b in zip(*outs): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_errors_are_pytorchs():
    x = minidl.randn(4, 2, 8)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"): nn.MultiheadAttention(8, 2)(x, x, x, is_causal=True)
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"): nn.MultiheadAttention(8, 3)
    with pytest.raises(RuntimeError, match="explicit attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=minidl.ones(2, 2) == 1, is_causal=True)
    with pytest.raises(ValueError, match="cannot be multiplied"):                       # keys of another width: the products say so
        F.scaled_dot_product_attention(x, minidl.randn(4, 3, 6), minidl.randn(4, 3, 8))


MHA_EXTRAS = [dict(kdim=5, vdim=3), dict(add_bias_kv=True), dict(add_zero_attn=True), dict(kdim=5, vdim=3, add_bias_kv=True, add_zero_attn=True),
              dict(add_bias_kv=True, add_zero_attn=True, bias=False)]


@pytest.mark.parametrize("extra", MHA_EXTRAS, ids=str)
def test_multihead_attention_extras_match_pytorch(extra):
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=True, **extra).double()
    mm = nn.MultiheadAttention(8, 2, batch_first=True, **extra).double()
    mm.load_state_dict({k: minidl.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    assert [n for n, _ in mm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    q, k, v = RNG.standard_normal((3, 4, 8)), RNG.standard_normal((3, 6, extra.get("kdim", 8))), RNG.standard_normal((3, 6, extra.get("vdim", 8)))
    pad = np.zeros((3, 6), bool); pad[1, 4:] = True
    attn = RNG.random((4, 6)) > 0.8
    res = []
    for lib, m in ((minidl, mm), (torch, tm)):
        qt, kt, vt = (_to(lib, a) for a in (q, k, v))
        out, w = m(qt, kt, vt, key_padding_mask=_to(lib, pad), attn_mask=_to(lib, attn))
        (out.sum() + (w * w).sum()).backward()
        res.append([out.detach().numpy(), w.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()] + [p.grad.numpy() for _, p in m.named_parameters()])
    for a, b in zip(*res): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_matches_pytorch(norm_first, batch_first):
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=16, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    tt = torch.nn.Transformer(**kw).double()
    mt = nn.Transformer(**kw).double()
    mt.load_state_dict({k: minidl.tensor(v.detach().numpy()) for k, v in tt.state_dict().items()})
    assert [n for n, _ in mt.named_parameters()] == [n for n, _ in tt.named_parameters()]
    src, tgt = RNG.standard_normal((5, 3, 8)), RNG.standard_normal((4, 3, 8))
    if batch_first: src, tgt = src.transpose(1, 0, 2), tgt.transpose(1, 0, 2)
    src_pad, mem_pad = np.zeros((3, 5), bool), np.zeros((3, 5), bool)
    src_pad[2, 3:] = True; mem_pad[2, 3:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    np.testing.assert_array_equal(causal.numpy(), torch.nn.Transformer.generate_square_subsequent_mask(4).numpy())
    res = []
    for lib, m in ((minidl, mt), (torch, tt)):
        s, t = _to(lib, src), _to(lib, tgt)
        y = m(s, t, tgt_mask=_to(lib, causal.numpy(), grad=False), src_key_padding_mask=_to(lib, src_pad), memory_key_padding_mask=_to(lib, mem_pad),
              tgt_is_causal=True)
        (y * y).sum().backward()
        res.append([y.detach().numpy(), s.grad.numpy(), t.grad.numpy()] + [p.grad.numpy() for _, p in m.named_parameters()])
    for a, b in zip(*res): np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_transformer_errors_are_pytorchs():
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8)
    with pytest.raises(RuntimeError, match="the batch number of src and tgt must be equal"): model(minidl.randn(5, 2, 8), minidl.randn(4, 3, 8))
    with pytest.raises(RuntimeError, match="the feature number of src and tgt must be equal to d_model"): model(minidl.randn(5, 2, 8), minidl.randn(4, 2, 6))

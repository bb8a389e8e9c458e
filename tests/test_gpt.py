"""Lesson 20's GPT: its parameters load from the nanoGPT-shaped PyTorch program of tests/programs (when PyTorch is
installed) and give the same logits, loss and gradients; the KV cache gives the same logits and samples as recomputing."""
import numpy as np
import pytest

import minidl
from minidl.core import Generator
from minidl.gpt import GPT, GPTConfig
from .test_pytorch_programs import load

try: import torch
except ImportError: torch = None


@pytest.mark.skipif(torch is None, reason="compares with the PyTorch program's model")
def test_same_model_as_nanogpt_in_pytorch():
    program = load("nanogpt", "torch")
    cfg = dict(block_size=16, vocab_size=20, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)
    torch.manual_seed(0)
    theirs = program.GPT(program.GPTConfig(**cfg)).double()
    mine = GPT(GPTConfig(**cfg)).double()
    state = {k: minidl.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items() if not k.endswith(".attn.bias")}   # the mask buffer
    mine.load_state_dict(state)
    idx = np.random.default_rng(0).integers(0, 20, (3, 16))
    tgt = np.random.default_rng(1).integers(0, 20, (3, 16))
    tl, tloss = theirs(torch.tensor(idx), torch.tensor(tgt))
    ml, mloss = mine(minidl.tensor(idx), minidl.tensor(tgt))
    np.testing.assert_allclose(mloss.item(), tloss.item(), rtol=1e-10)
    tloss.backward(); mloss.backward()
    for (n, p), (tn, tp) in zip(mine.named_parameters(), [(n, p) for n, p in theirs.named_parameters()]):
        assert n == tn
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=n)


def test_kv_cache_changes_nothing_but_speed():
    minidl.manual_seed(0)
    model = GPT(GPTConfig(block_size=12, vocab_size=9, n_layer=2, n_head=2, n_embd=8)).eval()
    prompt = minidl.randint(0, 9, (2, 3))
    a = model.generate(prompt, 30, top_k=5, generator=Generator().manual_seed(1))         # runs past block_size: the cache restarts
    b = model.generate(prompt, 30, top_k=5, use_cache=False, generator=Generator().manual_seed(1))
    assert a.tolist() == b.tolist() and a.shape == (2, 33)
    caches = [{} for _ in model.transformer.h]
    seq = minidl.randint(0, 9, (1, 12))
    with minidl.no_grad():
        model(seq[:, :5], caches=caches)
        chunk, _ = model(seq[:, 5:9], caches=caches)                      # several new positions at once
        full, _ = model(seq)
    np.testing.assert_allclose(chunk.numpy(), full[:, 5:9].numpy(), atol=1e-6)


def test_next_logits_are_the_last_positions():
    "`next_logits` (the last block past its keys and values, the norm and the head for the last position only) gives `forward`'s last logits."
    minidl.manual_seed(0)
    model = GPT(GPTConfig(block_size=12, vocab_size=9, n_layer=3, n_head=2, n_embd=8)).eval()
    seq = minidl.randint(0, 9, (2, 12))
    caches = [{} for _ in model.transformer.h]
    with minidl.no_grad():
        np.testing.assert_allclose(model.next_logits(seq).numpy(), model(seq)[0][:, -1].numpy(), atol=1e-6)
        prompt, one_more = model.next_logits(seq[:, :7], caches), model.next_logits(seq[:, 7:8], caches)   # a prompt into the cache, then one position
        np.testing.assert_allclose(prompt.numpy(), model(seq[:, :7])[0][:, -1].numpy(), atol=1e-6)
        np.testing.assert_allclose(one_more.numpy(), model(seq[:, :8])[0][:, -1].numpy(), atol=1e-6)


def test_gpt_on_cuda_matches_cpu():
    "The whole model on the GPU backend (numba's simulator in CI): embeddings, fused attention, loss, every gradient, and cached generation."
    minidl.manual_seed(0)
    cfg = GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=2, n_embd=4)              # small: the simulator runs every GPU thread in Python
    cpu, gpu = GPT(cfg).double(), GPT(cfg).double()
    gpu.load_state_dict(cpu.state_dict()); gpu.to("cuda")
    idx, tgt = minidl.randint(0, 5, (2, 4)), minidl.randint(0, 5, (2, 4))
    outs = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        logits, loss = m(idx.to(dev), tgt.to(dev))
        loss.backward()
        outs.append([logits.detach().cpu().numpy()] + [p.grad.cpu().numpy() for p in m.parameters()])
    for a, b in zip(*outs): np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    samples = [m.generate(idx[:, :2].to(dev), 3, generator=Generator().manual_seed(3)).cpu().tolist() for m, dev in ((cpu, "cpu"), (gpu, "cuda"))]
    assert samples[0] == samples[1]

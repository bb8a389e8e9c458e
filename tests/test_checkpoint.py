"Gradient checkpointing against PyTorch's torch.utils.checkpoint: the same gradients, the same dropout masks, less kept memory."
import numpy as np
import pytest
import torch
import torch.utils.checkpoint

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.amp import saved_tensor_bytes
from minidl.utils.checkpoint import checkpoint


def twins(p=0.0):
    minidl.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Dropout(p), nn.Linear(64, 16)) for _ in range(3)]
    tblocks = [torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Dropout(p), torch.nn.Linear(64, 16)) for _ in range(3)]
    for b, tb in zip(blocks, tblocks): tb.load_state_dict({k: torch.tensor(v.numpy()) for k, v in b.state_dict().items()})
    return blocks, tblocks


def test_checkpointed_blocks_give_pytorchs_gradients_and_keep_less():
    blocks, tblocks = twins()
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    def run(use):
        h = minidl.tensor(x, requires_grad=True)
        out = h
        for b in blocks: out = (checkpoint(b, out) if use else b(out)) + out
        return h, out.pow(2).mean()
    h, loss = run(True)
    kept = saved_tensor_bytes(loss); loss.backward()
    grads = [p.grad.numpy().copy() for b in blocks for p in b.parameters()] + [h.grad.numpy()]
    for b in blocks: b.zero_grad()
    h2, loss2 = run(False)
    assert kept < 0.5 * saved_tensor_bytes(loss2)                    # only the block inputs are kept
    loss2.backward()
    for g, g2 in zip(grads, [p.grad.numpy() for b in blocks for p in b.parameters()] + [h2.grad.numpy()]): np.testing.assert_allclose(g, g2, rtol=1e-5, atol=1e-7)
    th = torch.tensor(x, requires_grad=True); tout = th
    for tb in tblocks: tout = torch.utils.checkpoint.checkpoint(tb, tout, use_reentrant=True) + tout
    tout.pow(2).mean().backward()
    np.testing.assert_allclose(h.grad.numpy(), th.grad.numpy(), rtol=1e-4, atol=1e-6)
    for b, tb in zip(blocks, tblocks):
        for p, tp in zip(b.parameters(), tb.parameters()): np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_dropout_inside_a_checkpoint_drops_the_same_units_when_rerun():
    blocks, _ = twins(p=0.5)
    x = minidl.randn(8, 16, requires_grad=True)
    minidl.manual_seed(3); y = checkpoint(blocks[0], x); y.sum().backward(); g = x.grad.numpy().copy()
    x.grad = None; blocks[0].zero_grad()
    minidl.manual_seed(3); blocks[0](x).sum().backward()              # the same masks without checkpointing
    np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_checkpoint_refuses_autograd_grad_and_passes_through_without_grad():
    blocks, _ = twins()
    x = minidl.randn(4, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="Checkpoint runs a backward pass of its own"):
        minidl.autograd.grad(checkpoint(blocks[0], x).sum(), x)
    with minidl.no_grad(): assert checkpoint(blocks[0], x).grad_fn is None
    with pytest.raises(TypeError, match="must return one tensor"): checkpoint(lambda t: (t, t), x)

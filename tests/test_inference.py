"""`minidl.inference_mode` against `torch.inference_mode`: what is recorded, which tensors are inference tensors, and
the errors PyTorch raises when one is saved for backward or changed in place outside inference mode."""
import numpy as np
import pytest
import torch

import minidl
import minidl.nn as nn


def _facts(lib):
    "The same program in both libraries: the answers a user would look at."
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    facts = {}
    with lib.inference_mode():
        y = x * 2
        z = lib.ones(3)
        facts["inside"] = (lib.is_inference_mode_enabled(), lib.is_grad_enabled(), y.is_inference(), y.requires_grad, y.grad_fn is None, z.is_inference())
        facts["view of a normal tensor"] = x.view(3).is_inference()
        with lib.inference_mode(False):
            w = x * 2
            facts["inference_mode(False)"] = (lib.is_inference_mode_enabled(), lib.is_grad_enabled(), w.is_inference(), w.requires_grad)
        y.add_(1)                                            # in place on an inference tensor: allowed inside
        facts["in place inside"] = y.tolist()
    facts["after"] = (lib.is_inference_mode_enabled(), lib.is_grad_enabled(), y.clone().is_inference(), y.detach().is_inference(), (y[1:]).is_inference())
    with lib.no_grad(): facts["no_grad"] = (lib.is_inference_mode_enabled(), (x * 2).is_inference())
    for name, bad in (("saved for backward", lambda: (y * x).sum().backward()), ("in place outside", lambda: y.add_(1))):
        if name == "in place outside":
            (y.clone() * x).sum().backward()
            facts["a clone trains"] = x.grad.tolist()
        try: bad(); facts[name] = None
        except RuntimeError as e: facts[name] = str(e).split(".")[0]
    @lib.inference_mode()
    def called(t): return t * 2
    @lib.inference_mode
    def bare(t): return t * 2
    facts["decorators"] = (called(x).is_inference(), bare(x).is_inference(), lib.is_inference_mode_enabled())
    return facts


def test_inference_mode_behaves_as_pytorchs():
    got, want = _facts(minidl), _facts(torch)
    assert got.keys() == want.keys()
    for k in want: assert got[k] == want[k], k


def test_a_refused_in_place_change_writes_nothing():
    with minidl.inference_mode(): y = minidl.ones(3)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"): y.add_(1)
    assert y.tolist() == [1.0, 1.0, 1.0]                   # (PyTorch 2.13 writes first, then raises)


def test_a_model_in_inference_mode_matches_no_grad_and_keeps_no_graph():
    minidl.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = minidl.randn(5, 4)
    with minidl.no_grad(): ref = model(x)
    with minidl.inference_mode(): out = model(x)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert out.is_inference() and out.grad_fn is None and not out.requires_grad
    # the parameters stay ordinary tensors: training afterwards works
    model.train(); model(x).sum().backward()
    assert all(p.grad is not None and not p.is_inference() for p in model.parameters())

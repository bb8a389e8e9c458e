"""DLPack: minidl tensors and NumPy arrays / PyTorch tensors share memory both ways, with no copy."""
import numpy as np
import pytest
import torch

import minidl


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "uint8", "bool"])
def test_from_torch_and_numpy_without_a_copy(dtype):
    src = torch.arange(12).reshape(3, 4).to(getattr(torch, dtype))[:, 1::2]      # strided, too
    t = minidl.from_dlpack(src)
    assert (tuple(t.shape), str(t.dtype)) == ((3, 2), dtype)
    np.testing.assert_array_equal(t.numpy(), src.numpy())
    src[0, 0] = 1 if dtype != "bool" else False
    assert t.numpy()[0, 0] == src.numpy()[0, 0]                  # the same memory
    a = np.arange(5).astype(dtype)
    assert np.shares_memory(minidl.from_dlpack(a).numpy(), a)


def test_to_torch_and_numpy_without_a_copy():
    t = minidl.arange(6.0).reshape(2, 3)
    tt = torch.from_dlpack(t)
    tt[1, 2] = -5
    assert t.tolist()[1][2] == -5.0 and t.__dlpack_device__() == tt.__dlpack_device__() == (1, 0)
    s = minidl.tensor(3.5)                                       # 0-d
    assert torch.from_dlpack(s).item() == 3.5 and np.from_dlpack(s).shape == ()
    with minidl.inference_mode(): out = minidl.ones(2) * 3      # what a served model returns
    assert torch.from_dlpack(out).tolist() == [3.0, 3.0]


def test_what_cannot_be_shared_is_an_error_that_says_why():
    class OnGPU:
        def __dlpack__(self, **kw): raise AssertionError("never asked")
        def __dlpack_device__(self): return (2, 0)
    with pytest.raises(BufferError, match="reads only CPU memory through DLPack"): minidl.from_dlpack(OnGPU())
    with pytest.raises(TypeError, match="expects an object with __dlpack__"): minidl.from_dlpack([1.0, 2.0])
    with pytest.raises(BufferError, match="read-only view"): np.from_dlpack(minidl.ones(3).expand(2, 3))


def test_as_tensor_and_asarray_share_memory_as_pytorchs_do():
    t = torch.arange(4.0)
    m = minidl.as_tensor(t)                                             # a PyTorch CPU tensor: through DLPack, no copy
    t[0] = 9.0
    assert m[0].item() == 9.0 and m.dtype == minidl.float32
    assert minidl.asarray(t, copy=True).numpy()[0] == 9.0 and not np.shares_memory(minidl.asarray(t, copy=True).numpy(), t.numpy())
    a = np.ones(3, dtype=np.float32)
    for lib in (torch, minidl):                                         # the same answers to the same calls
        assert lib.as_tensor(a).dtype == lib.float32 and lib.as_tensor([1, 2]).dtype == lib.int64
        assert lib.as_tensor(a, dtype=lib.float64).dtype == lib.float64
    with pytest.raises(ValueError, match="copy=False"): minidl.asarray([1.0, 2.0], copy=False)
    with pytest.raises(ValueError): torch.asarray([1.0, 2.0], copy=False)

"""minidl's safetensors files against the official `safetensors` package, both directions; damaged files fail clearly."""
import re

import numpy as np
import pytest
from safetensors.numpy import load_file as st_load, save_file as st_save
try: import torch
except ImportError: torch = None
import minidl
import minidl as md
from minidl.save import load, load_file, save, save_file

ARRAYS = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "f64": np.linspace(0, 1, 5), "i64": np.array([[1, -2]], np.int64),
          "u8": np.arange(7, dtype=np.uint8), "b": np.array([True, False, True]), "scalar": np.array(3.5, np.float32),
          "empty": np.zeros((0, 3), np.float32), "f16": np.array([1.5, -2.0], np.float16)}

def test_official_reader_reads_ours(tmp_path):
    save_file(ARRAYS, tmp_path / "ours.safetensors", {"note": "hi"})
    theirs = st_load(str(tmp_path / "ours.safetensors"))
    assert set(theirs) == set(ARRAYS)
    for k, v in ARRAYS.items():
        assert theirs[k].dtype == v.dtype and theirs[k].shape == v.shape
        np.testing.assert_array_equal(theirs[k], v)

def test_we_read_the_official_writer(tmp_path):
    st_save(ARRAYS, str(tmp_path / "theirs.safetensors"), metadata={"a": "b"})
    with pytest.warns(UserWarning, match="no minidl.sha256 digest"):       # it still loads, but damage could not be detected
        ours, meta = load_file(tmp_path / "theirs.safetensors")
    assert meta == {"a": "b"}
    for k, v in ARRAYS.items():
        np.testing.assert_array_equal(ours[k].numpy(), v); assert ours[k].dtype == v.dtype

def test_checkpoint_of_a_model_opens_with_the_official_reader(tmp_path):
    md.manual_seed(0)
    model = md.nn.Sequential(md.nn.Linear(3, 4), md.nn.BatchNorm1d(4))
    save(model.state_dict(), tmp_path / "w.safetensors")
    theirs = st_load(str(tmp_path / "w.safetensors"))
    assert set(theirs) == set(model.state_dict())
    np.testing.assert_array_equal(theirs["0.weight"], model[0].weight.detach().numpy())

@pytest.mark.parametrize("damage", ["truncate_header", "truncate_data", "extra_bytes", "bad_offsets", "huge_header"])
def test_damaged_files_raise_valueerror(tmp_path, damage):
    p = tmp_path / "x.safetensors"
    save({"a": np.ones(10, np.float32), "b": np.zeros(3, np.int64)}, p)
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    if damage == "truncate_header": raw = raw[: 8 + n // 2]
    elif damage == "truncate_data": raw = raw[:-5]
    elif damage == "extra_bytes": raw = raw + b"\0" * 8
    elif damage == "bad_offsets": raw = raw.replace(b'"data_offsets":[0,40]', b'"data_offsets":[4,44]')
    elif damage == "huge_header": raw = (10**12).to_bytes(8, "little") + raw[8:]
    p.write_bytes(raw)
    with pytest.raises(ValueError, match="not a valid checkpoint"):
        load(p)

def test_failed_save_keeps_the_previous_file(tmp_path):
    p = tmp_path / "keep.safetensors"
    save({"a": np.ones(3, np.float32)}, p)
    with pytest.raises(TypeError):
        save({"a": np.ones(3, np.float32), "bad": object()}, p)
    np.testing.assert_array_equal(load(p)["a"].numpy(), np.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["keep.safetensors"]


def _checkpoint(tmp_path):
    p = tmp_path / "c.safetensors"
    save({"model": {"w": np.arange(8, dtype=np.float32), "mask": np.array([True, False])}, "lr": 0.01, "name": "run"}, p)
    return p, p.read_bytes()

@pytest.mark.filterwarnings("ignore:.*no minidl.sha256 digest")          # a flip in the word __metadata__ hides the digest: still refused
def test_every_single_bit_flip_is_refused(tmp_path):
    p, raw = _checkpoint(tmp_path)
    n = 8 + int.from_bytes(raw[:8], "little")
    bits = np.random.default_rng(0).choice(n * 8, 400, replace=False).tolist() + list(range(n * 8, len(raw) * 8))   # 400 in the header, all in the data
    for bit in bits:
        flipped = bytearray(raw); flipped[bit // 8] ^= 1 << (bit % 8); p.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="not a valid checkpoint"):
            load(p)


def _rewrite(p, header: dict, body: bytes):
    "A file with this header and body, and no digest (what a crafted file looks like)."
    import json
    head = json.dumps(header).encode()
    p.write_bytes(len(head).to_bytes(8, "little") + head + body)

@pytest.mark.filterwarnings("ignore:.*no minidl.sha256 digest")          # crafted files carry no digest
@pytest.mark.parametrize("header,body,message", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, bytes(8), "bad data_offsets"),
    ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "bad shape"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlapping"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "bad data_offsets"),
    ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "truncated"),
    ({"x": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}, bytes([0, 1, 2]), "BOOL but holds bytes other than 0 and 1"),
    ({"x": ["not", "an", "object"]}, b"", "is not an object"),
    ({"__metadata__": {"a": 1}}, b"", "must map strings to strings"),
    ({"__metadata__": {"minidl.structure": "[" * 100000}}, b"", "damaged minidl structure metadata (RecursionError)"),
])
def test_crafted_headers_are_refused_with_one_clear_error(tmp_path, header, body, message):
    p = tmp_path / "crafted.safetensors"
    _rewrite(p, header, body)
    with pytest.raises(ValueError, match=re.escape(message)):
        load(p)

def test_a_deeply_nested_header_is_a_clear_error(tmp_path):
    p = tmp_path / "deep.safetensors"
    head = b"[" * 100000 + b"]" * 100000
    p.write_bytes(len(head).to_bytes(8, "little") + head)
    with pytest.raises(ValueError, match=re.escape("the header is not JSON (RecursionError)")):
        load(p)

def test_an_unsupported_dtype_is_named(tmp_path):
    p = tmp_path / "f8.safetensors"
    _rewrite(p, {"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, bytes(2))
    with pytest.warns(UserWarning, match="no minidl.sha256 digest"), pytest.raises(ValueError, match="tensor 'x' has dtype 'F8_E4M3', which minidl cannot load"):
        load(p)


def test_16_bit_floats_keep_their_dtype_and_bits_and_read_as_safetensors_does(tmp_path):
    from safetensors.numpy import load_file
    import minidl
    x = minidl.tensor([1.0, -2.5, 65504.0, 1e-7, float("nan")])
    sd = {"h": x.half(), "b": x.bfloat16()}
    minidl.save(sd, tmp_path / "m.safetensors")
    back = minidl.load(tmp_path / "m.safetensors")
    for k in sd:
        assert back[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(back[k].numpy().view(np.uint16), sd[k].numpy().view(np.uint16))
    theirs = load_file(tmp_path / "m.safetensors")                # safetensors' own reader: F16 as float16
    np.testing.assert_array_equal(theirs["h"].view(np.uint16), sd["h"].numpy().view(np.uint16))


def test_pytorch_calling_conventions(tmp_path):
    "File objects both ways, map_location to the GPU (the simulator without one), weights_only accepted, a bare tensor."
    import io
    w = minidl.randn(3, 2)
    with open(tmp_path / "w.safetensors", "wb") as f: minidl.save({"w": w, "n": 4}, f)
    with open(tmp_path / "w.safetensors", "rb") as f: back = minidl.load(f, map_location="cuda", weights_only=True)
    assert str(back["w"].device) == "cuda:0" and back["w"].cpu().tolist() == w.tolist() and back["n"] == 4
    assert str(minidl.load(tmp_path / "w.safetensors", map_location={"cpu": "cuda:0"})["w"].device) == "cuda:0"
    buf = io.BytesIO(); minidl.save([w, w * 2], buf)
    assert [t.tolist() for t in minidl.load(io.BytesIO(buf.getvalue()))] == [w.tolist(), (w * 2).tolist()]
    with pytest.raises(TypeError, match=r"use minidl.save\(obj.state_dict\(\), f\)"): minidl.save(minidl.optim.SGD([minidl.zeros(1, requires_grad=True)], lr=0.1), buf)


@pytest.mark.skipif(torch is None, reason="needs PyTorch to write a torch.save file")
def test_a_torch_save_file_is_refused_with_the_way_out(tmp_path):
    for legacy in (False, True):
        p = tmp_path / f"model{legacy}.pt"
        torch.save({"w": torch.zeros(2)}, p, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError, match="minidl never unpickles.*safetensors.torch.save_file"): minidl.load(p)


def test_a_header_size_that_starts_like_a_pickle_still_loads():
    "A 640-byte header is stored as 80 02 00 … — the first bytes of a pickle: the pickle check must not come first."
    import io
    for pad in range(700):
        buf = io.BytesIO(); save_file({"w": np.zeros(2, np.float32)}, buf, {"note": "x" * pad})
        if buf.getvalue()[:2] == b"\x80\x02": break
    else: raise AssertionError("no padding gave a 640-byte header")
    tensors, meta = load_file(io.BytesIO(buf.getvalue()))
    assert tensors["w"].tolist() == [0.0, 0.0] and meta["note"] == "x" * pad

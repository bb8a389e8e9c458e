"""minidl's safetensors files against the official `safetensors` package, both directions; damaged files fail clearly."""
import numpy as np
import pytest
from safetensors.numpy import load_file as st_load, save_file as st_save
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
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(p)

def test_failed_save_keeps_the_previous_file(tmp_path):
    p = tmp_path / "keep.safetensors"
    save({"a": np.ones(3, np.float32)}, p)
    with pytest.raises(TypeError):
        save({"a": np.ones(3, np.float32), "bad": object()}, p)
    np.testing.assert_array_equal(load(p)["a"].numpy(), np.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["keep.safetensors"]

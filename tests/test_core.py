import os
import subprocess
import sys

import numpy as np
import pytest

import minidl
from minidl.core import as_dtype, default_generator, kernel_cache_dir, manual_seed, set_default_dtype


def test_manual_seed_reproduces_draws():
    manual_seed(123)
    a = default_generator().random(5)
    manual_seed(123)
    np.testing.assert_array_equal(a, default_generator().random(5))
    manual_seed(124)
    assert not np.array_equal(a, default_generator().random(5))


def test_kernel_cache_dir_is_set_before_numba_compiles(tmp_path):
    env = {**os.environ, "MINIDL_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    code = "import minidl.core as c, numba; print(c.kernel_cache_dir()); print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path / "numba")] * 2


def test_user_numba_cache_dir_wins(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    code = "import minidl.core as c; print(c.kernel_cache_dir())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "mine")


def test_dtype_errors_name_what_was_expected():
    with pytest.raises(TypeError, match="unsupported dtype complex128; expected one of float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool"):
        as_dtype(np.complex128)
    with pytest.raises(TypeError, match="must be a floating dtype"):
        set_default_dtype("int64")
    assert kernel_cache_dir().is_absolute()


def test_version_is_exposed():
    assert minidl.__version__ == "0.1.0"

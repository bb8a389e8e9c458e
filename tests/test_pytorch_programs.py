"""Six PyTorch programs (`tests/programs/`) run twice: under PyTorch when it is installed, and with `torch` replaced
by `minidl` in their import lines and nowhere else. Each must train (its loss falls) and reach what the program is
for; where the seeds allow (the scalar-autograd suite has no randomness), minidl's numbers equal PyTorch's."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl.data import digits, names, tiny_shakespeare

try: import torch
except ImportError: torch = None

PROGRAMS = Path(__file__).parent / "programs"
FRAMEWORKS = ["minidl", "torch"]


def as_minidl(source: str) -> str:
    "The program with `torch` replaced by `minidl` in its import lines, and nowhere else."
    lines = []
    for line in source.splitlines():
        if re.match(r"(import|from)\s+torch\b", line):
            line = "import minidl as torch" if line.strip() == "import torch" else re.sub(r"\btorch\b", "minidl", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def load(name: str, framework: str):
    "Program `name` as a fresh module, for `framework`."
    if framework == "torch" and torch is None: pytest.skip("PyTorch is not installed: the program runs under minidl only")
    path = PROGRAMS / f"{name}.py"
    source = path.read_text()
    if framework == "minidl": source = as_minidl(source)
    module = types.ModuleType(f"{name}_{framework}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module             # dataclasses look their module up
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def falls(losses, k=5) -> bool: return np.mean(losses[-k:]) < np.mean(losses[:k])


def test_only_import_lines_change():
    for path in PROGRAMS.glob("*.py"):
        before, after = path.read_text().splitlines(), as_minidl(path.read_text()).splitlines()
        changed = [b for b, a in zip(before, after) if b != a]
        assert changed and all(re.match(r"(import|from) torch\b", b) for b in changed), path.name
        assert "torch" in path.read_text().split("import", 1)[1] and "minidl" not in path.read_text(), path.name


@pytest.fixture(scope="module")
def digit_arrays():
    train, test = digits(size=28)
    x, y = train.tensors[0].numpy(), train.tensors[1].numpy()
    xt, yt = test.tensors[0].numpy(), test.tensors[1].numpy()
    return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_official_mnist_example(framework, digit_arrays):
    out = load("mnist_cnn", framework).main(digit_arrays, epochs=3)
    assert falls(out["losses"]) and out["accuracy"][-1] > 0.8, out["accuracy"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nn_tutorial_from_scratch_to_modules(framework, digit_arrays):
    out = load("nn_from_scratch", framework).main(digit_arrays, epochs=3)
    assert falls(out["losses"]) and out["accuracy"][0] > 0.8
    assert out["valid_losses"][-1] < out["valid_losses"][0] / 3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_makemore_mlp_language_model(framework):
    out = load("makemore_mlp", framework).main(names(), steps=600)
    assert falls(out["losses"], 50) and out["dev_loss"] < 2.7, out["dev_loss"]          # a uniform guess over 27 characters: 3.30
    assert all(s.endswith(".") or len(s) > 20 for s in out["samples"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nanogpt_character_model(framework):
    out = load("nanogpt", framework).main(tiny_shakespeare()[:200_000], max_iters=150)
    assert falls(out["losses"], 20) and out["val"][1] < out["val"][0] - 1.0, out["val"]    # from log(65) = 4.17 towards character statistics
    assert out["sample_length"] == 41


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_d2l_linear_regression(framework):
    out = load("d2l_linear_regression", framework).main(num_epochs=3)
    assert falls(out["losses"], 1) and out["losses"][-1] < 1e-3 and out["w_error"] < 0.01
    np.testing.assert_allclose(out["concise_w"], [2.0, -3.4], atol=0.01); assert abs(out["concise_b"] - 4.2) < 0.01


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_scalar_autograd_suite(framework):
    out = load("scalar_autograd_vs_torch", framework).main()
    assert out["sanity"] == (-20.0, 46.0)
    # micrograd's expression (24.704…, 138.83…, 645.57…) plus a tanh term; the same numbers under both frameworks
    np.testing.assert_allclose(out["more_ops"], (24.70308163287813, 138.8338192428828, 645.5772594734182), rtol=1e-12)

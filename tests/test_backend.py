"""The backend interface (lesson 02b): every registered backend implements every primitive, the CPU and CUDA
backends agree primitive by primitive, and the layering it promises holds — no import cycle, backends import
nothing above them, and the op layer reaches tensor storage only through a backend."""
import ast
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl.backend import PRIMITIVES, cpu_backend, get_backend, missing_primitives
from minidl.conv import Geometry

PKG = Path(minidl.__file__).parent


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_backend_implements_every_primitive(device):
    assert missing_primitives(get_backend(device)) == []


def _x(seed=0, shape=(3, 4)): return np.random.default_rng(seed).standard_normal(shape)

CONV = Geometry((3, 3), (2, 1), ((1, 1), (1, 1)), (1, 2), (4, 5))           # for (2, 3, 7, 7) inputs
DIRECT = Geometry((3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), (4, 4))          # for (2, 4, 6, 6) padded inputs
POOL = Geometry((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (3, 3))            # for (2, 3, 6, 6) inputs
WINDOWS = (np.array([0, 2, 4]), np.array([3, 5, 6]), np.array([0, 1, 3]), np.array([2, 4, 6]), np.full((3, 3), 6.0))

def _pool_grad(B, put):
    _, idx = B.max_pool(put(_x(shape=(2, 3, 6, 6))), POOL)
    return B.max_pool_grad(put(_x(1, (2, 3, 3, 3))), idx, (2, 3, 6, 6))

def _updates(B, put):
    "Two steps of every optimizer's update rule (lesson 07) on a 12-element parameter: the parameter and its state arrays afterwards."
    from minidl.optim import adagrad_update, adam_update, rmsprop_update, sgd_update
    after = []
    for rule, nstate, hyper in [(sgd_update, 1, (0.1, 0.9, 0.1, 0.01, True, False)), (sgd_update, 1, (0.1, 0.0, 0.0, 0.01, False, True)),
                                (adam_update, 3, (0.1, 0.9, 0.99, 1e-8, 0.01, True, True, 0.1, 0.01)),
                                (adam_update, 3, (0.1, 0.9, 0.99, 1e-8, 0.01, False, False, 0.1, 0.01)),
                                (rmsprop_update, 3, (0.1, 0.9, 1e-8, 0.01, 0.9, True)), (rmsprop_update, 3, (0.1, 0.9, 1e-8, 0.01, 0.0, False)),
                                (adagrad_update, 1, (0.1, 1e-10, 0.01))]:
        state = [1.0 + _x(2 + i, (12,)) ** 2 for i in range(nstate)]       # positive: running squares
        if rule is rmsprop_update: state[1] = np.tanh(state[1] - 1.5)       # a running mean whose square stays below the squares'
        arrays = [put(_x(shape=(12,))), put(_x(1, (12,)))] + [put(a) for a in state]
        for _ in range(2): B.update(rule, tuple(arrays), tuple(np.float64(h) if isinstance(h, float) else h for h in hyper))
        after += [arrays[0], *arrays[2:]]
    return after

def _range_error(B, put):
    "The message check_range gives for an index of 5 outside [0, 3) (a device reports it at the next copy to the host)."
    try:
        B.check_range(put(np.array([0, 5])), 0, 3, "index {} is bad")
        B.to_host(put(np.zeros(1)))
    except IndexError as e: return str(e).split(" (")[0]

# one call per primitive: (arguments made on the host, with arrays moved to the backend by `put`)
CALLS = {
    "empty": lambda B, put: B.full((2, 3), 0, np.float32).shape,            # empty's values are arbitrary: its shape
    "full": lambda B, put: B.full((2, 3), 1.5, np.float64),
    "arange": lambda B, put: B.arange(2, 11, 3, np.int64),
    "from_host": lambda B, put: B.from_host(_x()),
    "to_host": lambda B, put: B.to_host(put(_x())),
    "cast": lambda B, put: B.cast(put(_x()), np.dtype(np.float32)),
    "copy": lambda B, put: B.copy(B.permute(put(_x()), (1, 0))),
    "is_contiguous": lambda B, put: (B.is_contiguous(put(_x())), B.is_contiguous(B.permute(put(_x()), (1, 0)))),
    "element_strides": lambda B, put: B.element_strides(B.permute(put(_x()), (1, 0))),
    "reshape": lambda B, put: B.reshape(B.permute(put(_x()), (1, 0)), (2, 6)),
    "permute": lambda B, put: B.permute(put(_x(shape=(2, 3, 4))), (2, 0, 1)),
    "broadcast_to": lambda B, put: B.broadcast_to(put(_x(shape=(1, 4))), (3, 4)),
    "shares_memory": lambda B, put: (lambda a: (B.shares_memory(B.getitem(a, (slice(1, None),)), a), B.shares_memory(B.copy(a), a)))(put(_x())),
    "getitem": lambda B, put: B.getitem(put(_x()), (put(np.array([2, 0])), put(np.array([1, 3])))),
    "setitem": lambda B, put: (lambda a: (B.setitem(a, (slice(None), 1), 7.0), a)[1])(put(_x())),
    "take_along_axis": lambda B, put: B.take_along_axis(put(_x()), put(np.array([[3], [0], [1]])), 1),
    "scatter_add": lambda B, put: B.scatter_add(5, put(np.array([0, 4, 4, 1])), put(np.array([1.0, 2.0, 3.0, 4.0]))),
    "check_range": lambda B, put: _range_error(B, put),
    "concatenate": lambda B, put: B.concatenate([put(_x()), put(_x(1, (1, 4)))], 0),
    "assign": lambda B, put: (lambda a: (B.assign(a, put(np.arange(4.0))), a)[1])(put(_x())),
    "map": lambda B, put: [B.map(op, put(_x()), 0.5) for op in ("add", "gt", "maximum", "leaky_relu", "remainder")] + [B.map("pow", put(np.abs(_x())), 0.5)]
                          + [B.map(op, put(_x())) for op in ("exp", "tanh", "sigmoid", "gelu", "silu", "abs", "sign")]
                          + [B.map("relu", put(np.array([np.nan, -1.0, 0.0, 2.0]))), B.map("relu_grad", put(_x(shape=(4,))), put(np.array([np.nan, -1.0, 0.0, 2.0])))],
    "where": lambda B, put: (lambda a: B.where(B.map("gt", a, 0.0), a, -1.0))(put(_x())),
    "sum": lambda B, put: B.sum(put(_x(shape=(2, 3, 4))), (0, 2), True),
    "prod": lambda B, put: B.prod(put(_x()), 1, False),
    "amax": lambda B, put: B.amax(put(_x()), (1,), False),
    "amin": lambda B, put: B.amin(put(_x()), (0,), True),
    "argmax": lambda B, put: (B.argmax(put(_x()), 1, False), B.argmax(put(_x()), None, False)),
    "argmin": lambda B, put: B.argmin(put(_x()), 0, True),
    "cumulative": lambda B, put: [B.cumulative(put(_x()), 1, "sum"), B.cumulative(put(_x()), 0, "prod"), B.cumulative(put(_x() > 0), 1, "sum")],
    "sort": lambda B, put: [list(B.sort(put(_x()), 1, False)), list(B.sort(put(np.array([[2.0, np.nan, 1.0, 2.0]])), 1, True))],
    "matmul": lambda B, put: B.matmul(put(_x(shape=(2, 3, 4))), put(_x(1, (4, 5)))),
    "einsum": lambda B, put: B.einsum(("bij", "jk", "bik"), put(_x(shape=(2, 3, 4))), put(_x(1, (4, 5)))),
    "softmax": lambda B, put: B.softmax(put(_x()), 0),
    "log_softmax": lambda B, put: B.log_softmax(put(_x()), 1),
    "logsumexp": lambda B, put: B.logsumexp(put(_x()), 1),
    "scaled_exp": lambda B, put: B.scaled_exp(put(_x()), put(np.full(3, 2.0))),
    "im2col": lambda B, put: B.im2col(put(_x(shape=(2, 3, 7, 7))), CONV),
    "col2im": lambda B, put: B.col2im(put(_x(shape=(2, 27, 4, 5))), CONV, (2, 3, 7, 7)),
    "direct_conv": lambda B, put: B.direct_conv(put(_x(shape=(2, 4, 6, 6))), put(_x(1, (4, 1, 3, 3))), 4, DIRECT),
    "direct_input_grad": lambda B, put: B.direct_input_grad(put(_x(shape=(2, 4, 4, 4))), put(_x(1, (4, 1, 3, 3))), 4, DIRECT, (2, 4, 6, 6)),
    "direct_weight_grad": lambda B, put: B.direct_weight_grad(put(_x(shape=(2, 4, 6, 6))), put(_x(1, (2, 4, 4, 4))), 4, DIRECT, (4, 1, 3, 3)),
    "max_pool": lambda B, put: list(B.max_pool(put(_x(shape=(2, 3, 6, 6))), POOL)),
    "max_pool_grad": _pool_grad,
    "window_mean": lambda B, put: B.window_mean(put(_x(shape=(2, 3, 6, 6))), WINDOWS),
    "window_mean_grad": lambda B, put: B.window_mean_grad(put(_x(1, (2, 3, 3, 3))), WINDOWS, (2, 3, 6, 6)),
    # the generators differ between devices: the same shape and dtype, and values in [0, 1)
    "uniform": lambda B, put: (lambda u: [u.shape, str(u.dtype), bool(((u >= 0) & (u < 1)).all()), bool(u.std() > 0.2)])(B.to_host(B.uniform((1000,), np.dtype(np.float32)))),
    "update": _updates,
}


def test_the_cross_backend_suite_calls_every_primitive():
    assert sorted(CALLS) == sorted(PRIMITIVES)


def _host(B, v):
    if isinstance(v, (list, tuple)): return [_host(B, e) for e in v]
    return B.to_host(v) if isinstance(v, B.array_type) else v


@pytest.mark.filterwarnings("ignore:invalid value encountered in relu")      # NaN inputs on purpose (minidl filters these for users)
@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_cuda_backend_agrees_with_the_cpu_backend(primitive):
    G = get_backend("cuda")
    want = _host(cpu_backend, CALLS[primitive](cpu_backend, np.array))
    got = _host(G, CALLS[primitive](G, G.from_host))
    for w, g in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
        if isinstance(w, str): assert g == w; continue
        if isinstance(w, np.ndarray): assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12)


# ---- layering

def _module_name(path: Path) -> str:
    "The dotted name of a package file below minidl: 'ops', 'nn' (for nn/__init__.py), 'nn.functional'."
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    "The minidl modules that `path` imports anywhere in it (module level or inside functions), by dotted name."
    here = _module_name(path)
    package = here.split(".") if path.stem == "__init__" else here.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = package[:len(package) - node.level + 1] + ([node.module] if node.module else [])
            elif (node.module or "").startswith("minidl"): base = node.module.split(".")[1:]
            else: continue
            for a in node.names:          # `from . import functional` names a module; `from .ops import relu` a name in one
                sub = ".".join(base + [a.name])
                found.add(sub if (PKG / Path(*sub.split("."))).with_suffix(".py").exists() or (PKG / Path(*sub.split("."))).is_dir() else ".".join(base))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("minidl.") for a in node.names if a.name.startswith("minidl.")}
    return {m for m in found if m and m != "_modidx"}


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in PKG.rglob("*.py") if p.stem != "_modidx" and _module_name(p)}


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []
    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open": cycles.append(path[path.index(n):] + [n])
            elif n not in state: visit(n, path + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state: visit(m, [m])
    assert cycles == []


ABOVE_THE_BACKENDS = {"tensor", "autograd", "ops", "more_ops", "layers", "nn", "nn.functional", "nn.init", "nn.utils", "conv", "optim", "optim.lr_scheduler", "learner", "models",
                      "data", "utils", "utils.data", "save", "train", "text", "rnn", "attention", "nn.utils.rnn"}

def test_backends_import_nothing_above_them():
    graph = _graph()
    assert {m: graph[m] & ABOVE_THE_BACKENDS for m in ("core", "kernels", "backend", "cuda", "gpu", "gpu_ops")} == \
           {m: set() for m in ("core", "kernels", "backend", "cuda", "gpu", "gpu_ops")}


def _storage_uses(path: Path) -> list:
    "Lines where `._a` (a tensor's storage) is used other than handed, whole, to a function that is not NumPy's."
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    def numpy_call(call): return isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) and call.func.value.id == "np"
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "_a") or isinstance(node.ctx, ast.Store): continue
        up = parents[node]
        while isinstance(up, (ast.List, ast.Tuple, ast.comprehension, ast.ListComp, ast.GeneratorExp, ast.keyword, ast.IfExp)):
            up = parents[up]
        if isinstance(up, ast.Call) and node is not up.func and not numpy_call(up): continue
        bad.append(f"{path.name}:{node.lineno}: {ast.unparse(up)[:80]}")
    return bad


@pytest.mark.parametrize("module", ["ops", "layers", "conv", "optim"])
def test_the_layers_reach_storage_only_through_the_backend(module):
    path = PKG / f"{module}.py"
    assert _storage_uses(path if path.exists() else PKG / module / "__init__.py") == []


def test_the_storage_scan_catches_numpy_on_storage(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy as np\ndef f(x, B):\n    B.sum(x._a, (0,), False)\n    y = np.exp(x._a)\n    return x._a.reshape(-1), x._a[0]\n")
    assert [line.split(":")[1] for line in _storage_uses(f)] == ["4", "5", "5"]


def test_no_module_imports_a_private_name_from_another():
    private = []
    for path in PKG.rglob("*.py"):
        if path.stem == "_modidx": continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("minidl")):
                private += [f"{path.stem} imports {a.name} from {node.module}" for a in node.names if a.name.startswith("_")]
    assert private == []

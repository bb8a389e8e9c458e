"""One list of differentiable ops for every backend: each entry is a function of tensors and the shapes of its inputs.
`tests/test_op_suite.py` runs every entry on every device: on the CPU against float64 central differences, on CUDA
(numba's simulator without a GPU) against the CPU, forward and backward."""
import numpy as np

import minidl
import minidl.nn.functional as F

UNARY = {
    "exp": lambda x: x.exp(), "log": lambda x: (x.abs() + 0.1).log(), "sqrt": lambda x: (x.abs() + 0.1).sqrt(),
    "rsqrt": lambda x: (x.abs() + 0.1).rsqrt(), "tanh": lambda x: x.tanh(), "sin": lambda x: x.sin(), "cos": lambda x: x.cos(),
    "sigmoid": lambda x: x.sigmoid(), "relu": lambda x: x.relu(), "gelu": lambda x: x.gelu(), "silu": lambda x: x.silu(),
    "abs": lambda x: x.abs(), "neg": lambda x: -x, "leaky_relu": lambda x: F.leaky_relu(x, 0.1), "elu": lambda x: F.elu(x),
    "softplus": lambda x: F.softplus(x), "clamp": lambda x: x.clamp(-1, 0.5), "square": lambda x: x ** 2, "log1p": lambda x: (x.abs()).log1p(),
    "tan": lambda x: (x / 2).tan(), "sinh": lambda x: x.sinh(), "cosh": lambda x: x.cosh(), "asin": lambda x: (x / 3).asin(),
    "acos": lambda x: (x / 3).acos(), "atan": lambda x: x.atan(), "log2": lambda x: (x.abs() + 0.1).log2(),
    "log10": lambda x: (x.abs() + 0.1).log10(), "expm1": lambda x: x.expm1(),
    "rounding (zero gradient)": lambda x: x.floor() + x.ceil() * x + x.round() + x.trunc(),
    "nan_to_num": lambda x: minidl.where(x > 1.5, np.inf, minidl.where(x < -1.9, np.nan, minidl.where(x < -1.5, -np.inf, x))).nan_to_num(-1.0, 3.0, -3.0),
}

BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / (b.abs() + 0.5),
    "maximum": lambda a, b: minidl.maximum(a, b), "minimum": lambda a, b: minidl.minimum(a, b),
    "where": lambda a, b: minidl.where(a > b, a, b * 2), "pow": lambda a, b: (a.abs() + 0.5) ** b,
    "remainder": lambda a, b: a % (b.abs() + 0.5), "floor_divide (no gradient)": lambda a, b: a * (a // (b.abs() + 0.5)),
}

REDUCTIONS_AND_VIEWS = {
    "sum": lambda x: x.sum(), "sum dim": lambda x: x.sum(1), "sum dims keepdim": lambda x: x.sum((0, 2), keepdim=True),
    "mean": lambda x: x.mean(-1), "var": lambda x: x.var(0), "std": lambda x: x.std(),
    "softmax": lambda x: x.softmax(1), "log_softmax": lambda x: x.log_softmax(-1), "logsumexp": lambda x: x.logsumexp(0),
    "permute reshape": lambda x: x.permute(2, 0, 1).reshape(4, 6), "slice with step and new axis": lambda x: x[1:, ::2, None],
    "transpose then index": lambda x: x.transpose(0, 2)[1], "expand then sum": lambda x: x.expand(2, 3, 4, 2).sum(0),
    "cat": lambda x: minidl.cat([x, x * 2], 1), "stack": lambda x: minidl.stack([x, x], -1), "max all": lambda x: x.max(),
    "integer-array index": lambda x: x.reshape(-1)[minidl.tensor([0, 5, 5, -1], device=x.device)],
    "softmax of rows from mid-buffer": lambda x: x[1:].softmax(-1), "log_softmax of rows from mid-buffer": lambda x: x[1:].log_softmax(-1),
    "logsumexp of rows from mid-buffer": lambda x: x[1:].logsumexp(-1),
    "cumsum": lambda x: x.cumsum(1), "cumprod": lambda x: x.cumprod(0), "cumprod through a zero": lambda x: (x * (x > 0)).cumprod(1),
    "sort descending": lambda x: x.sort(1, descending=True).values, "topk": lambda x: x.topk(2, dim=0).values,
    "median dim": lambda x: x.median(1).values, "amax dims": lambda x: x.amax((0, 2)), "amin": lambda x: x.amin(),
    "flip": lambda x: x.flip((0, 2)), "roll": lambda x: x.roll((1, -1), (1, 2)), "repeat": lambda x: x.repeat(2, 1, 1, 3),
    "repeat_interleave": lambda x: x.repeat_interleave(2, dim=1), "tril": lambda x: x.tril(), "triu": lambda x: x.triu(1),
    "masked_fill": lambda x: x.masked_fill(x > 0.5, 0.25), "narrow": lambda x: x.narrow(1, 1, 2),
    "index_select": lambda x: x.index_select(1, minidl.tensor([3, 0, 3], device=x.device)),
    "bmm": lambda x: x.bmm(x.transpose(1, 2)),
}

CONV = {
    "conv2d dense, stride, padding, dilation": lambda x, w: F.conv2d(x, w[:4], stride=(2, 1), padding=1, dilation=(1, 2)),
    "conv2d same padding, bias": lambda x, w: F.conv2d(x, w[:4], w[:4, 0, 0, 0], padding="same"),
    "conv2d depthwise (direct kernel)": lambda x, w: F.conv2d(x, w[:3, :1], stride=2, padding=(1, 0), groups=3),
    "conv2d grouped": lambda x, w: F.conv2d(minidl.cat([x, x * 2], 1), w[:4], groups=2),
    "conv1d": lambda x, w: F.conv1d(x[:, :, 0], w[:4, :, 0], padding=2, dilation=2),
    "conv_transpose2d": lambda x, w: F.conv_transpose2d(x, w[:3], stride=2, padding=1, output_padding=1),
    "unfold": lambda x, w: F.unfold(x, (2, 3), padding=1, stride=(2, 1)),
    "fold of unfold": lambda x, w: F.fold(F.unfold(x, 2, padding=1), (6, 5), 2, padding=1),
    "max_pool2d ceil_mode": lambda x, w: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    "max_pool2d overlapping, dilated": lambda x, w: F.max_pool2d(x, 2, 1, dilation=2),
    "max_pool2d 2x2": lambda x, w: F.max_pool2d(x, 2),
    "max_pool1d": lambda x, w: F.max_pool1d(x[:, :, 1], 2),
    "avg_pool2d": lambda x, w: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "avg_pool2d divisor": lambda x, w: F.avg_pool2d(x, 2, 1, divisor_override=3),
    "adaptive_avg_pool2d": lambda x, w: F.adaptive_avg_pool2d(x, (4, 3)),
    "pad reflect": lambda x, w: F.pad(x, (2, 1, 1, 3), "reflect"),
    "pad replicate": lambda x, w: F.pad(x, (1, 2), "replicate"),
    "pad circular": lambda x, w: F.pad(x, (3, 0, 0, 2), "circular"),
    "pad constant": lambda x, w: F.pad(x, (1, 1, 2, 0), value=0.5),
    "group_norm": lambda x, w: F.group_norm(x, 1, w[0, :, 0, 0], w[1, :, 0, 0]),
}

GATHERS = {
    "gather": lambda x: x.gather(1, minidl.tensor([[0, 3], [2, 2], [3, 1]], device=x.device)),
    "max dim": lambda x: x.max(1).values, "min dim keepdim": lambda x: x.min(0, keepdim=True).values,
    "prod": lambda x: x.prod(1), "prod all": lambda x: x.prod(),
    "einsum matmul": lambda x: minidl.einsum("ij,kj->ik", x, x * 2),
    "einsum outer, summed letter": lambda x: minidl.einsum("ij,kl->jk", x, x[:2, :3]),
    "einsum transposed output": lambda x: minidl.einsum("ij,ik->kj", x, x.exp()),
}

_TARGET, _PROBS = [0, 3, 2, 1, 2], np.random.default_rng(3).dirichlet(np.ones(4), 5)
_on = lambda values, x, **kw: minidl.tensor(values, device=x.device, **kw)      # a constant on the device of x

LOSSES = {
    "cross_entropy": lambda x: F.cross_entropy(x, _on(_TARGET, x)),
    "cross_entropy sum": lambda x: F.cross_entropy(x, _on(_TARGET, x), reduction="sum"),
    "cross_entropy none": lambda x: F.cross_entropy(x, _on(_TARGET, x), reduction="none"),
    "cross_entropy label_smoothing": lambda x: F.cross_entropy(x, _on(_TARGET, x), label_smoothing=0.1),
    "cross_entropy ignore_index": lambda x: F.cross_entropy(x, _on(_TARGET, x), ignore_index=2),
    "cross_entropy weight": lambda x: F.cross_entropy(x, _on(_TARGET, x), weight=_on([0.5, 1.0, 2.0, 1.5], x, dtype="float64")),
    "cross_entropy probabilities": lambda x: F.cross_entropy(x, _on(_PROBS, x)),
    "cross_entropy of rows from mid-buffer": lambda x: F.cross_entropy(x[1:], _on(_TARGET[1:], x)),
    "nll_loss": lambda x: F.nll_loss(x.log_softmax(1), _on([0, 3, -100, 1, 2], x)),
    "nll_loss sum, weight": lambda x: F.nll_loss(x.log_softmax(1), _on([0, 3, -100, 1, 2], x), reduction="sum",
                                                 weight=_on([1.0, 2.0, 0.5, 1.5], x, dtype="float64")),
    "mse_loss": lambda x: F.mse_loss(x, minidl.ones(5, 4, dtype="float64", device=x.device)),
}

MATMUL = {"matrix @ matrix": ((5, 7), (7, 3)), "batch @ matrix": ((2, 5, 7), (7, 4)), "vector @ matrix": ((3,), (3, 2)),
          "broadcast batches": ((2, 1, 4, 3), (5, 3, 2))}

OPS = {
    **{f"unary {k}": (f, [(3, 5)]) for k, f in UNARY.items()},
    **{f"binary {k}": (f, [(4, 1, 3), (2, 3)]) for k, f in BINARY.items()},
    **{k: (f, [(3, 4, 2)]) for k, f in REDUCTIONS_AND_VIEWS.items()},
    **{k: (f, [(2, 3, 6, 5), (6, 3, 3, 3)]) for k, f in CONV.items()},
    **{k: (f, [(3, 4)]) for k, f in GATHERS.items()},
    **{k: (f, [(5, 4)]) for k, f in LOSSES.items()},
    **{f"matmul {k}": (lambda a, b: a @ b, list(shapes)) for k, shapes in MATMUL.items()},
}
"Every op of the suite: name → (function of tensors, the shapes of its inputs)."


def inputs(shapes, device, dtype=np.float64):
    "Leaves that require grad, the same values on every device: uniform in [-2, 2), one seed per input."
    return [minidl.tensor(np.random.default_rng(i).uniform(-2.0, 2.0, s).astype(dtype), device=device, requires_grad=True)
            for i, s in enumerate(shapes)]


def same_as_cpu(fn, *shapes, rtol=1e-9, dtype=np.float64):
    "fn on CPU and CUDA inputs: equal outputs, and equal gradients of sum(out * weights)."
    cpu, dev = inputs(shapes, "cpu", dtype), inputs(shapes, "cuda", dtype)
    out_c, out_d = fn(*cpu), fn(*dev)
    assert str(out_d.device) == "cuda:0"
    np.testing.assert_allclose(out_d.cpu().detach().numpy(), out_c.detach().numpy(), rtol=rtol, atol=rtol)
    w = np.random.default_rng(9).standard_normal(out_c.shape).astype(dtype)
    (out_c * minidl.tensor(w)).sum().backward()
    (out_d * minidl.tensor(w, device="cuda")).sum().backward()
    for c, d in zip(cpu, dev):
        if c.grad is None:                                      # an input the function does not use
            assert d.grad is None; continue
        assert str(d.grad.device) == "cuda:0"
        np.testing.assert_allclose(d.grad.cpu().numpy(), c.grad.numpy(), rtol=rtol, atol=rtol)

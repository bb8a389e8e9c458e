"""`minidl.onnx.export` layer by layer: every layer minidl's convolutional lessons have, exported with a dynamic batch,
checked by `onnx.checker` (full check) and run in onnxruntime on batch sizes the trace never saw, against minidl."""
import io

import numpy as np
import onnx
import onnxruntime
import pytest

import minidl
import minidl.nn as nn
from minidl.onnx import export


class Ops(nn.Module):
    "Tensor ops a forward pass writes by hand: reshape, permute, slicing, cat, reductions, arithmetic with constants."
    def __init__(self): super().__init__(); self.proj = nn.Linear(6, 6)
    def forward(self, x):
        y = self.proj(x).reshape(x.shape[0], 2, 3).permute(0, 2, 1)            # (N, 3, 2)
        z = minidl.cat([y[:, :2], y[:, -1:] * 2.0, y[:, None, 0, ::-1] ** 2], 1)
        return (z.sum(-1, keepdim=True) - z.exp().sqrt()) / 3 + (z.tanh().log1p().abs() + 1).rsqrt()


class Embedded(nn.Module):
    def __init__(self): super().__init__(); self.emb, self.norm = nn.Embedding(10, 8), nn.LayerNorm(8)
    def forward(self, idx): return self.norm(self.emb(idx)).softmax(-1)


def _batchnorm():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    m.train(); m(minidl.randn(8, 3, 6, 6)); m(minidl.randn(8, 3, 6, 6))          # running statistics that are not 0 and 1
    return m


LAYERS = {
    "linear": (lambda: nn.Linear(5, 3), (5,)),
    "linear, no bias": (lambda: nn.Linear(5, 3, bias=False), (5,)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 11)),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, bias=False), (4, 9, 9)),
    "conv transpose": (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (3, 5, 5)),
    "max pool": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 7, 7)),
    "max pool, ceil mode": (lambda: nn.MaxPool2d(2, stride=2, ceil_mode=True), (2, 7, 7)),
    "avg pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
    "avg pool, padding not counted": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    "adaptive avg pool 1×1": (lambda: nn.AdaptiveAvgPool2d(1), (2, 5, 6)),
    "adaptive avg pool 2×3": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 4, 6)),
    "batchnorm, eval": (_batchnorm, (3, 6, 6)),
    "layernorm": (lambda: nn.LayerNorm(6), (4, 6)),
    "activations": (lambda: nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
                                          nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4), nn.LogSoftmax(-1)), (4,)),
    "flatten": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3), nn.Softmax(-1)), (1, 6, 6)),
    "tensor ops": (Ops, (6,)),
}


def _roundtrip(model, example, opset=17, **inputs):
    buf = io.BytesIO()
    export(model, example, buf, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=opset)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    return onnxruntime.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_onnxruntime(name, opset):
    minidl.manual_seed(0)
    make, shape = LAYERS[name]
    model = make().eval()
    session = _roundtrip(model, minidl.randn(2, *shape), opset)
    for n in (1, 7):
        x = minidl.randn(n, *shape)
        with minidl.no_grad(): want = model(x).numpy()
        (got,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_embedding_takes_integer_inputs():
    minidl.manual_seed(1)
    model = Embedded().eval()
    session = _roundtrip(model, minidl.randint(0, 10, (2, 5)))
    idx = minidl.randint(0, 10, (3, 5))
    with minidl.no_grad(): want = model(idx).numpy()
    np.testing.assert_allclose(session.run(None, {"input": idx.numpy()})[0], want, rtol=1e-5, atol=1e-6)
    assert onnx.load_from_string(_bytes(model, idx)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def _bytes(model, example):
    buf = io.BytesIO(); export(model, example, buf); return buf.getvalue()


def test_weights_are_stored_once_under_their_names_and_the_training_mode_is_restored():
    minidl.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    model[4].weight = model[0].weight                                   # tied
    model.train()
    names = sorted(i.name for i in onnx.load_from_string(_bytes(model, minidl.randn(2, 3))).graph.initializer if not i.name.startswith(("ints", "const")))
    assert names == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias"] and model.training


def test_what_cannot_be_exported_is_an_error_that_names_it():
    class Sorted(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(3, 3)
        def forward(self, x): return self.lin(x).cumsum(-1)
    with pytest.raises(NotImplementedError, match=r"minidl's op CumSum \(in layer 'Sorted'\) has no ONNX translation"): _bytes(Sorted(), minidl.randn(2, 3))
    class Masked(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(3, 3)
        def forward(self, x): return self.lin(x) * (x > 0)
    with pytest.raises(RuntimeError, match="would freeze it at its traced value"): _bytes(Masked(), minidl.randn(2, 3))
    with pytest.raises(TypeError, match="args must be a Tensor or a tuple of Tensors"): _bytes(nn.Linear(3, 3), np.ones((2, 3), np.float32))
    gru = nn.GRU(4, 5)                                                # traced on a batch of 1, left free: which axis is the batch?
    with pytest.raises(RuntimeError, match="size 1 along the dynamic 'input' axis 1: .* trace with a size of 2 or more"):
        export(gru, minidl.randn(3, 1, 4), io.BytesIO(), dynamic_axes={"input": {1: "batch"}})
    export(gru, minidl.randn(3, 2, 4), io.BytesIO(), dynamic_axes={"input": {1: "batch"}})


class SelfAttention(nn.Module):
    def __init__(self): super().__init__(); self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
    def forward(self, x): return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("name", ["multihead attention", "transformer encoder", "gpt"])
def test_attention_models_match_onnxruntime(name):
    from minidl import gpt
    minidl.manual_seed(3)
    if name == "gpt":
        model = gpt.GPT(gpt.GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16)).eval()
        make = lambda n: minidl.randint(0, 11, (n, 16))
    else:
        model = (SelfAttention() if name == "multihead attention" else
                 nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True), 2)).eval()
        make = lambda n: minidl.randn(n, 5, 8)
    session = _roundtrip(model, make(2))
    for n in (1, 3):
        x = make(n)
        with minidl.no_grad():
            out = model(x); want = (out[0] if isinstance(out, tuple) else out).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], want, rtol=1e-5, atol=2e-6)


def test_a_shape_that_follows_the_batch_outside_the_recorded_ops_is_refused_for_a_dynamic_batch():
    class AddsOnes(nn.Module):
        def forward(self, x): return x + minidl.ones(x.shape[0], 4)   # made with the batch size, outside any recorded op
    model = AddsOnes()
    with pytest.raises(RuntimeError, match="a size that follows a dynamic axis"): _roundtrip(model, minidl.randn(2, 4))
    x = minidl.randn(2, 4)                                           # with the batch size fixed, it exports
    session = onnxruntime.InferenceSession(_bytes(model, x), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy())


RECURRENT = {
    "GRU": lambda: nn.GRU(4, 5, batch_first=True),
    "GRU, 2 layers, bidirectional": lambda: nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True),
    "GRU, no bias, time first": lambda: nn.GRU(4, 5, bias=False),
    "RNN, tanh": lambda: nn.RNN(4, 5, batch_first=True),
    "RNN, relu, 2 layers": lambda: nn.RNN(4, 5, num_layers=2, nonlinearity="relu", batch_first=True),
    "LSTM with a projection, 2 layers, bidirectional": lambda: nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=3),   # step by step: ONNX's LSTM has no projection
    "GRUCell": lambda: nn.GRUCell(4, 5),
    "RNNCell": lambda: nn.RNNCell(4, 5),
    "LSTMCell": lambda: nn.LSTMCell(4, 5),
}


@pytest.mark.parametrize("name", list(RECURRENT))
def test_gru_rnn_and_cells_export_their_zero_state_with_a_dynamic_batch(name):
    minidl.manual_seed(8)
    net = RECURRENT[name]().eval()
    cell = "Cell" in name
    class Outputs(nn.Module):                                        # the sequence's output, or a cell's new h
        def __init__(self): super().__init__(); self.net = net
        def forward(self, x):
            out = self.net(x)
            return (out[0] if isinstance(out, tuple) else out) if cell or not isinstance(out, tuple) else out[0]
    model = Outputs()
    shape = (lambda n: (n, 4)) if cell else ((lambda n: (n, 3, 4)) if net.batch_first else (lambda n: (3, n, 4)))
    buf = io.BytesIO()
    axis = 0 if cell or net.batch_first else 1
    export(model, minidl.randn(*shape(2)), buf, dynamic_axes={"input": {axis: "batch"}, "output": {axis: "batch"}})
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    assert "ConstantOfShape" in {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    session = onnxruntime.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = minidl.randn(*shape(n))
        with minidl.no_grad(): want = model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(num_layers=1), dict(num_layers=2, bidirectional=True), dict(num_layers=2, bias=False)], ids=str)
def test_lstm_matches_onnxruntime_outputs_and_final_states_on_batches_the_trace_never_saw(kw):
    minidl.manual_seed(5)
    lstm = nn.LSTM(4, 5, batch_first=True, **kw).eval()
    buf = io.BytesIO()
    export(lstm, minidl.randn(2, 6, 4), buf, output_names=["y", "h", "c"], dynamic_axes={"input": {0: "batch"}, "y": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}})
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    assert "LSTM" in {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    session = onnxruntime.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (1, 7):                                                 # the zero initial state is ONNX's default: it follows the batch
        x = minidl.randn(n, 6, 4)
        got = session.run(None, {"input": x.numpy()})
        with minidl.no_grad(): y, (h, c) = lstm(x)
        for a, b in zip(got, (y, h, c)): np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


def test_an_lstm_with_a_given_initial_state_exports_it():
    minidl.manual_seed(7)
    lstm = nn.LSTM(3, 4).eval()
    class WithState(nn.Module):
        def __init__(self): super().__init__(); self.lstm, self.h0, self.c0 = lstm, nn.Parameter(minidl.randn(1, 1, 4)), nn.Parameter(minidl.randn(1, 1, 4))
        def forward(self, x): return self.lstm(x, (self.h0, self.c0))[0]
    model, x = WithState(), minidl.randn(5, 1, 3)
    session = onnxruntime.InferenceSession(_bytes(model, x), providers=["CPUExecutionProvider"])
    with minidl.no_grad(): np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_the_character_lstm_of_lesson_23_exports_with_a_dynamic_batch():
    from minidl.lm import CharLSTM
    minidl.manual_seed(6)
    model = CharLSTM(11, n_embd=8, n_layer=2).eval()
    session = _roundtrip(model, minidl.randint(0, 11, (3, 7)))
    for n in (1, 5):
        idx = minidl.randint(0, 11, (n, 7))
        with minidl.no_grad(): want = model(idx)[0].numpy()
        np.testing.assert_allclose(session.run(None, {"input": idx.numpy()})[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["cnn1d", "gpt", "lstm"])
def test_minidl_export_writes_the_checkpoints_model_and_its_int8_version_and_scores_both(model, tmp_path, capsys):
    import contextlib
    from minidl.cli import main
    from minidl.lm import load_lm, train_lm
    from minidl.train import load_model, train
    with contextlib.redirect_stderr(io.StringIO()):
        if model == "cnn1d": train(model="cnn1d", epochs=1, out=tmp_path, print_fn=lambda *a: None)
        else: train_lm(model=model, iters=2, n_layer=1, n_embd=16, n_head=2, block_size=16, batch_size=2, eval_interval=2, eval_iters=1,
                       sample_chars=1, out=tmp_path, print_fn=lambda *a: None)
    ckpt = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "f32.onnx")]) == 0
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "i8.onnx"), "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("ONNX float32") == 2 and printed.count("ONNX int8") == 1
    assert ("test accuracy" if model == "cnn1d" else "validation loss") in printed
    f32, i8 = (onnxruntime.InferenceSession(str(tmp_path / n), providers=["CPUExecutionProvider"]) for n in ("f32.onnx", "i8.onnx"))
    if model == "cnn1d":
        net, _ = load_model(ckpt); x = minidl.randn(5, 40)                 # any batch size
        with minidl.no_grad(): want = net(x).numpy()
    else:
        net, _, config = load_lm(ckpt); x = minidl.randint(0, 10, (1, config["block_size"]))
        with minidl.no_grad(): want = net(x)[0].numpy()
    np.testing.assert_allclose(f32.run(None, {"input": x.numpy()})[0], want, rtol=1e-4, atol=1e-5)
    quantized = i8.run(None, {"input": x.numpy()})[0]
    assert np.abs(quantized - want).max() < 0.25 * np.abs(want).max() + 0.05              # int8: close, not equal
    if model != "lstm":                                                                     # ONNX's LSTM operator has no integer form here
        stored = lambda name: sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(tmp_path / name)).graph.initializer)
        assert stored("i8.onnx") < 0.6 * stored("f32.onnx")                                # the weights (not the graph around them) shrink


def test_minidl_export_refuses_what_it_cannot_do(tmp_path, capsys):
    from minidl.cli import main
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(SystemExit) as e: main(["export", str(tmp_path / "junk.safetensors"), "--onnx", str(tmp_path / "x.onnx")])
    assert e.value.code == 2 and "junk.safetensors" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    with pytest.raises(SystemExit) as e: main(["export", "m.safetensors", "--onnx", "x.onnx", "--quantize", "int4"])
    assert e.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err

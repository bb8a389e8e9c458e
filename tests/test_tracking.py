"""Experiment tracking (lesson 27) against MLflow's own store (SQLite in a temporary folder, no server): what the callback logs,
the minidl flavor in the model registry, one run per distributed job, and the commands; TensorBoard event files read back by
TensorBoard's own reader, and compared with what PyTorch's `SummaryWriter` writes for the same calls."""
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import minidl
import minidl.distributed as dist
from minidl import tracking
from minidl.serve import load_test, running_server
from minidl.train import load_model, train

mlflow = tracking._mlflow()


@pytest.fixture
def store(tmp_path, monkeypatch):
    "A fresh MLflow store for one test; its URI."
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)                                   # the default artifact root is ./mlruns
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")                              # forget the experiment an earlier test made active (MLflow keeps it per process)
    yield uri
    while mlflow.active_run(): mlflow.end_run()


def quiet_train(**kw):
    with contextlib.redirect_stderr(io.StringIO()): return train(print_fn=lambda *a: None, **kw)


def test_the_callback_logs_settings_every_epochs_row_and_the_checkpoint(store, tmp_path):
    cb = tracking.MLflowCallback(experiment="t", run_name="one", params={"note": "x"})
    quiet_train(epochs=3, lr=0.01, out=tmp_path / "r", cbs=[cb])
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.run_name == "one" and run.info.status == "FINISHED"
    p = run.data.params
    assert (p["lr"], p["epochs"], p["optimizer"], p["model"], p["note"], p["start_epoch"]) == ("0.01", "3", "AdamW", "Sequential", "x", "0")
    final = minidl.load(tmp_path / "r" / "model.safetensors")["metrics"]
    for name in ("train_loss", "valid_loss", "accuracy"):
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2] and history[-1].value == pytest.approx(final[name], rel=1e-12)
    ckpt = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/checkpoint/last.safetensors")
    assert minidl.load(ckpt)["epoch"] == 2 and set(minidl.load(ckpt)) >= {"model", "optimizer", "schedule", "random"}


def test_models_are_registered_in_versions_and_load_back_by_uri(store, tmp_path):
    quiet_train(epochs=1, out=tmp_path / "r")
    checkpoint = tmp_path / "r" / "model.safetensors"
    with mlflow.start_run():
        versions = [tracking.log_model(checkpoint, registered_model_name="m").registered_model_version for _ in range(2)]
        run_id = mlflow.active_run().info.run_id
    assert versions == [1, 2]
    original, _ = load_model(checkpoint)
    x = minidl.data.mnist1d()[1].tensors[0][:4]
    for uri in ("models:/m/1", "models:/m/2"):
        with minidl.no_grad(): assert tracking.load_model(uri)(x).tolist() == original(x).tolist()
    assert tracking.download_checkpoint("models:/m/2").read_bytes() == checkpoint.read_bytes()
    with mlflow.start_run():
        (tmp_path / "junk.safetensors").write_bytes(open(checkpoint, "rb").read())
        minidl.save({"weights": minidl.ones(2)}, tmp_path / "plain.safetensors")
        with pytest.raises(ValueError, match="not a checkpoint written by `minidl train`"): tracking.log_model(tmp_path / "plain.safetensors")
        mlflow.log_artifact(str(tmp_path / "junk.safetensors"), "loose")
        loose = mlflow.active_run().info.run_id
    with pytest.raises(Exception, match="MLmodel"): tracking.load_model(f"runs:/{loose}/loose")


def test_a_distributed_run_is_logged_once_by_rank_0(store, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(f"""
import minidl, minidl.distributed as dist
from minidl.tracking import MLflowCallback
from minidl.train import setup_run
dist.init_process_group()
learn, config, start, out = setup_run("mnist1d", "mlp", 2, 64, 3e-3, "adamw", "32", 0, {str(tmp_path / 'r')!r}, None, lambda *a: None,
                                      [MLflowCallback(experiment="ddp")])
learn.to_distributed()
learn.fit_one_cycle(2, 3e-3)
""")
    r = dist.launch(2, [script], capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "valid_loss")) == 2


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-c", "import sys, minidl.cli; sys.exit(minidl.cli.main())", *map(str, args)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})


def test_train_track_register_then_serve_the_registered_version(store, tmp_path):
    r = cli("train", "--epochs", "1", "--out", tmp_path / "run", "--track", "--experiment", "cli", "--register", "served")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "registered as models:/served/1" in r.stdout
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert run.data.params["batch_size"] == "128" and run.data.params["dataset"] == "mnist1d" and "accuracy" in run.data.metrics
    x = minidl.data.mnist1d()[1].tensors[0][:2]
    with running_server("models:/served/1") as server:
        result = load_test(server.port, "/predict", json.dumps({"inputs": x.tolist()}).encode(), clients=1, requests=2)
    assert result["errors"] == []
    bad = cli("serve", "models:/served/9")
    assert bad.returncode == 2 and "cannot fetch models:/served/9" in bad.stderr


def test_train_track_refuses_what_it_cannot_do(store, tmp_path):
    r = cli("train", "--register", "x", "--out", tmp_path / "a")
    assert r.returncode == 2 and "--register needs --track" in r.stderr
    r = cli("train", "--model", "gpt", "--register", "x")
    assert r.returncode == 2 and "--register needs --track" in r.stderr
    r = cli("train", "--help")
    assert r.returncode == 0 and all(o in r.stdout for o in ("--track", "--register NAME", "--nproc NPROC", "--epochs"))


def test_a_language_model_run_is_logged_as_it_goes(store, tmp_path):
    r = cli("train", "--model", "gpt", "--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--block-size", "16", "--batch-size", "2", "--sample-chars", "1", "--out", tmp_path / "lm",
            "--track", "--experiment", "lm", "--register", "tiny-gpt", "--tensorboard", tmp_path / "tb")
    assert r.returncode == 0, r.stderr[-3000:]
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    history = minidl.load(tmp_path / "lm" / "model.safetensors")["history"]
    logged = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in logged] == [(int(h[0]), pytest.approx(h[2])) for h in history] and len(logged) == 3
    assert run.data.params["model"] == "gpt" and run.data.params["iters"] == "4" and "vocab" not in run.data.params
    net = tracking.load_model("models:/tiny-gpt/1")
    assert type(net).__name__ == "GPT"
    events = read_events(tmp_path / "tb")                            # the same run, in TensorBoard's files too
    assert [(e.step, e.value) for e in events.Scalars("val_loss")] == [(int(h[0]), pytest.approx(h[2], rel=1e-6)) for h in history]
    assert "| model | gpt |" in events.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _write_everything(writer, as_tensor):
    "The same calls for both writers: scalars (one NaN), a dict of curves, histograms (three ways to bin), text, images, a figure, hparams."
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    values, image = rng.standard_normal(1000), rng.random((3, 8, 5)).astype(np.float32)
    for step in range(3): writer.add_scalar("loss", as_tensor(np.float32(1 / (step + 1))), step)
    writer.add_scalar("nan", float("nan"), 0)
    writer.add_scalars("pair", {"a": 1.0, "b": 2.0}, 4)
    writer.add_histogram("weights", as_tensor(values), 2)
    writer.add_histogram("weights_auto", as_tensor(values), 2, bins="auto")
    writer.add_histogram("weights_20", as_tensor(values), 2, bins=20)
    writer.add_text("note", "**bold** text", 1)
    writer.add_image("rgb", as_tensor(image), 0)
    writer.add_image("hwc", as_tensor(image.transpose(1, 2, 0)), 0, dataformats="HWC")
    fig = plt.figure(figsize=(2, 1)); plt.plot([1, 2]); writer.add_figure("figure", fig, 0)
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hp/accuracy": 0.5}, run_name="hparams")
    writer.close()


def test_summary_writer_writes_what_pytorchs_writes(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    from minidl.utils.tensorboard import SummaryWriter
    from PIL import Image
    from tensorboard.plugins.hparams import plugin_data_pb2
    _write_everything(SummaryWriter(tmp_path / "ours"), lambda a: minidl.tensor(np.asarray(a)))
    _write_everything(TorchWriter(str(tmp_path / "theirs")), lambda a: torch.tensor(np.asarray(a)))
    ours, theirs = read_events(tmp_path / "ours"), read_events(tmp_path / "theirs")
    assert {k: v for k, v in ours.Tags().items() if v} == {k: v for k, v in theirs.Tags().items() if v}
    for tag in ("loss", "nan"):
        np.testing.assert_array_equal([(e.step, e.value) for e in ours.Scalars(tag)], [(e.step, e.value) for e in theirs.Scalars(tag)])
    for tag in ("weights", "weights_auto", "weights_20"):
        a, b = ours.Histograms(tag)[0].histogram_value, theirs.Histograms(tag)[0].histogram_value
        assert (a.min, a.max, a.num) == (b.min, b.max, b.num) and a.sum == pytest.approx(b.sum) and a.sum_squares == pytest.approx(b.sum_squares)
        np.testing.assert_allclose(a.bucket_limit, b.bucket_limit, rtol=1e-12); np.testing.assert_array_equal(a.bucket, b.bucket)
    assert ours.Tensors("note/text_summary")[0].tensor_proto == theirs.Tensors("note/text_summary")[0].tensor_proto
    for tag in ("rgb", "hwc", "figure"):
        a, b = (np.asarray(Image.open(io.BytesIO(e.Images(tag)[0].encoded_image_string))).astype(int) for e in (ours, theirs))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1            # floats to bytes: we round, PyTorch truncates
    assert sorted(os.listdir(tmp_path / "ours"))[1:] == sorted(os.listdir(tmp_path / "theirs"))[1:] == ["hparams", "pair_a", "pair_b"]
    for sub in ("pair_a", "pair_b"):
        assert [e.value for e in read_events(tmp_path / "ours" / sub).Scalars("pair")] == [e.value for e in read_events(tmp_path / "theirs" / sub).Scalars("pair")]
    a, b = (read_events(tmp_path / w / "hparams") for w in ("ours", "theirs"))
    contents = [{t: plugin_data_pb2.HParamsPluginData.FromString(c) for t, c in e.PluginTagToContent("hparams").items()} for e in (a, b)]
    assert contents[0] == contents[1]
    assert [e.value for e in a.Scalars("hp/accuracy")] == [e.value for e in b.Scalars("hp/accuracy")] == [0.5]


def test_summary_writer_refuses_what_it_cannot_draw_and_purges_a_restarted_run(tmp_path):
    from minidl.utils.tensorboard import SummaryWriter
    with SummaryWriter(tmp_path / "bad") as w:
        with pytest.raises(ValueError, match=r"add_scalar\('loss'\): expected a number or a one-element tensor, got Tensor of shape \(2,\)"):
            w.add_scalar("loss", minidl.tensor([1.0, 2.0]))
        with pytest.raises(ValueError, match="NaN or inf"): w.add_histogram("h", [1.0, float("inf")])
        with pytest.raises(ValueError, match="empty"): w.add_histogram("h", [])
        with pytest.raises(ValueError, match="dataformats 'CHW'"): w.add_image("i", np.zeros((4, 4)))
        with pytest.raises(ValueError, match="the value of 'layers' must be a bool, a number, a string"): w.add_hparams({"layers": [1, 2]}, {})
    with SummaryWriter(tmp_path / "run") as w:
        for step in range(10): w.add_scalar("loss", step, step)
    time.sleep(1.1)                                                  # a restart comes later: its file's name (the second it was made) sorts after
    with SummaryWriter(tmp_path / "run", purge_step=5) as w:          # restarted from a checkpoint of step 5
        for step in range(5, 8): w.add_scalar("loss", 100 + step, step)
    assert [(e.step, e.value) for e in read_events(tmp_path / "run").Scalars("loss")] == [(s, s) for s in range(5)] + [(s, 100 + s) for s in range(5, 8)]


def test_tensorboard_callback_and_command_log_batches_epochs_and_settings(tmp_path):
    final = quiet_train(epochs=2, lr=0.01, out=tmp_path / "r", cbs=[tracking.TensorBoardCallback(tmp_path / "tb", params={"note": "x"})])
    events = read_events(tmp_path / "tb")
    assert [e.step for e in events.Scalars("valid_loss")] == [0, 1] and events.Scalars("accuracy")[-1].value == pytest.approx(final["accuracy"])
    losses = events.Scalars("batch/train_loss")
    assert [e.step for e in losses] == list(range(len(losses))) and len(losses) == len(events.Scalars("batch/lr")) > 0
    r = cli("train", "--epochs", "1", "--out", tmp_path / "cli", "--tensorboard", tmp_path / "tb_cli")
    assert r.returncode == 0, r.stderr[-3000:]
    events = read_events(tmp_path / "tb_cli")
    assert [e.step for e in events.Scalars("valid_loss")] == [0]
    assert "| batch_size | 128 |" in events.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()

"""Experiment tracking (lesson 27) against MLflow's own store (SQLite in a temporary folder, no server): what the callback logs,
the minidl flavor in the model registry, one run per distributed job, and the commands."""
import contextlib
import io
import json
import os
import subprocess
import sys

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


def test_a_language_model_run_is_logged_when_it_ends(store, tmp_path):
    r = cli("train", "--model", "gpt", "--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--block-size", "16", "--batch-size", "2", "--sample-chars", "1", "--out", tmp_path / "lm",
            "--track", "--experiment", "lm", "--register", "tiny-gpt")
    assert r.returncode == 0, r.stderr[-3000:]
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    history = minidl.load(tmp_path / "lm" / "model.safetensors")["history"]
    logged = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in logged] == [(int(h[0]), pytest.approx(h[2])) for h in history] and len(logged) == 3
    assert run.data.params["model"] == "gpt" and run.data.params["iters"] == "4" and "vocab" not in run.data.params
    net = tracking.load_model("models:/tiny-gpt/1")
    assert type(net).__name__ == "GPT"

"""Language models from the command line (lesson 23): `minidl train --model gpt|lstm` and `minidl sample`, the LSTM's
stateful generation against recomputation, and --resume finishing a run exactly as the run that never stopped."""
import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl
import minidl.lm as L
from minidl.text import CharTokenizer

MINIDL = str(Path(sys.executable).with_name("minidl"))
TINY = dict(iters=30, eval_interval=10, eval_iters=2, n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, lr=3e-3, warmup=5, sample_chars=20)
TINY_ARGS = [a for k, v in TINY.items() for a in ("--" + k.replace("_", "-"), str(v))]


def _minidl(*args):
    return subprocess.run([MINIDL, *args], capture_output=True, text=True, timeout=600)


def test_lstm_generation_carries_the_state_exactly_as_recomputing_the_whole_sequence():
    minidl.manual_seed(0)
    model = L.CharLSTM(11, n_embd=16, n_layer=2).eval()
    seq = minidl.randint(0, 11, (3, 12))
    with minidl.no_grad():
        full, _ = model(seq)
        out, state = model.lstm(model.emb(seq[:, :5]))
        steps = [model.head(out[:, -1])]
        for t in range(5, 11):
            out, state = model.lstm(model.emb(seq[:, t:t + 1]), state)
            steps.append(model.head(out[:, -1]))
    np.testing.assert_allclose(np.stack([s.numpy() for s in steps], 1), full[:, 4:11].numpy(), atol=1e-5)
    # sampling: the same ids as a loop that reruns the whole sequence for every new token, with the same draws
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    got = model.generate(seq[:, :4], 15, temperature=0.9, top_k=5, generator=g1)
    want = seq[:, :4]
    with minidl.no_grad():
        for _ in range(15):
            want = minidl.cat([want, minidl.gpt.sample_next(model(want)[0][:, -1], 0.9, 5, g2)], 1)
    assert got.tolist() == want.tolist()


def test_random_windows_and_the_schedule_have_known_values():
    ids = minidl.arange(100)
    x, y = L.random_windows(ids, 5, 8, np.random.default_rng(0))
    assert x.shape == (5, 8) and y.shape == (5, 8)
    xs = x.numpy()
    np.testing.assert_array_equal(xs - xs[:, :1], np.tile(np.arange(8), (5, 1)))     # consecutive ids: windows of the data
    np.testing.assert_array_equal(y.numpy(), xs + 1)                                # the targets: one position on
    assert xs.min() >= 0 and y.numpy().max() <= 99
    lrs = [L.lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3 / 11) and lrs[9] == pytest.approx(1e-3 * 10 / 11)
    assert lrs[10] == pytest.approx(1e-3) and lrs[55] == pytest.approx(5.5e-4) and lrs[100] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("model,dataset,lr", [("gpt", "shakespeare", "3e-3"), ("lstm", "names", "1e-2")])
def test_train_then_sample_from_the_command_line(tmp_path, model, dataset, lr):
    out = tmp_path / model
    r = _minidl("train", "--model", model, "--dataset", dataset, *TINY_ARGS, "--lr", lr, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "step 30/30: train loss" in r.stdout and "sample from it with: minidl sample" in r.stdout
    for f in ("last.safetensors", "best.safetensors", "model.safetensors", "loss.png"): assert (out / f).exists(), f
    ckpt = minidl.load(out / "model.safetensors")
    (s0, t0, v0), (s1, t1, v1) = ckpt["history"][0], ckpt["history"][-1]
    vocab = len(ckpt["config"]["vocab"])
    assert (s0, s1) == (0, 30) and abs(v0 - math.log(vocab)) < 0.3 and v1 < v0 - 0.5      # from uniform guessing to learning
    prompt = "ROMEO:" if dataset == "shakespeare" else "\nan"
    a = _minidl("sample", str(out / "model.safetensors"), "--prompt", prompt, "--max-new-tokens", "25", "--seed", "1", "--num-samples", "2")
    b = _minidl("sample", str(out / "model.safetensors"), "--prompt", prompt, "--max-new-tokens", "25", "--seed", "1", "--num-samples", "2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout                                                      # a seed repeats the samples
    texts = a.stdout[:-1].split("\n---------------\n")
    assert len(texts) == 2 and all(t.startswith(prompt) and len(t) == len(prompt) + 25 for t in texts)
    assert set("".join(texts)) <= set(ckpt["config"]["vocab"])


def test_resume_finishes_the_run_exactly_as_the_run_that_never_stopped(tmp_path):
    straight = L.train_lm(**TINY, out=tmp_path / "straight", print_fn=lambda s: None)
    def stop_after_step_10(line):
        if line.startswith("step 10/"): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): L.train_lm(**TINY, out=tmp_path / "stopped", print_fn=stop_after_step_10)
    assert minidl.load(tmp_path / "stopped" / "last.safetensors")["iter"] == 10
    lines = []
    resumed = L.train_lm(resume=tmp_path / "stopped" / "last.safetensors", out=tmp_path / "stopped", print_fn=lines.append)
    assert "resuming at step 10" in lines[0]
    assert resumed["history"] == straight["history"]
    a, b = (minidl.load(tmp_path / d / "model.safetensors")["model"] for d in ("straight", "stopped"))
    for k in a: np.testing.assert_array_equal(b[k].numpy(), a[k].numpy(), err_msg=k)


def test_ctrl_c_points_at_the_checkpoint_to_resume(tmp_path, monkeypatch, capsys):
    (tmp_path / "last.safetensors").write_bytes(b"")
    @functools.wraps(L.train_lm)                     # (the command reads its defaults from the signature)
    def interrupted(**kw): raise KeyboardInterrupt
    monkeypatch.setattr(L, "train_lm", interrupted)
    assert L.main_train_lm(["--out", str(tmp_path)]) == 130
    assert f"continue with: minidl train --resume {tmp_path / 'last.safetensors'}" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt", "--n-embd", "30", "--n-head", "4"], "n_embd (--n-embd) 30 must be divisible by n_head (--n-head) 4"),
    (["--model", "lstm", "--iters", "0"], "iters (--iters) must be an integer >= 1, got 0"),
    (["--model", "gpt", "--dataset", "mnist1d"], "argument --dataset: invalid choice: 'mnist1d'"),
])
def test_a_bad_language_model_option_is_one_line_and_exit_2(args, message):
    r = _minidl("train", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr.strip().splitlines()[-1], r.stderr


def test_train_routes_by_model_dataset_or_checkpoint(tmp_path):
    assert "--n-head" in _minidl("train", "--model", "lstm", "--help").stdout
    assert "--n-head" in _minidl("train", "--dataset", "names", "--help").stdout
    assert "--epochs" in _minidl("train", "--help").stdout                          # the classifiers' command, as before
    L.train_lm(**{**TINY, "iters": 1}, out=tmp_path, print_fn=lambda s: None)
    r = _minidl("train", "--resume", str(tmp_path / "last.safetensors"))                # a language model's checkpoint: lesson 23's command
    assert r.returncode == 2 and "has finished all its 1 steps" in r.stderr, r.stderr


def test_sampling_refuses_what_it_cannot_do(tmp_path):
    L.train_lm(**{**TINY, "iters": 1}, out=tmp_path, print_fn=lambda s: None)
    ckpt = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match=r"the characters '\{~' are not in the model's vocabulary"): L.sample(ckpt, prompt="a{b~")
    with pytest.raises(ValueError, match="prompt must have at least one character"): L.sample(ckpt, prompt="")
    with pytest.raises(ValueError, match="temperature must be positive, got 0"): L.sample(ckpt, temperature=0)
    with pytest.raises(ValueError, match="top_k must be at least 1"): L.sample(ckpt, top_k=0)
    minidl.save({"weights": minidl.ones(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a language-model checkpoint"): L.sample(tmp_path / "other.safetensors")
    r = _minidl("sample", str(tmp_path / "other.safetensors"))
    assert r.returncode == 2 and "not a language-model checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_eval_reports_a_language_models_losses_and_still_evaluates_classifiers(tmp_path):
    L.train_lm(**TINY, out=tmp_path, print_fn=lambda s: None)
    r = _minidl("eval", str(tmp_path / "model.safetensors"))
    assert r.returncode == 0, r.stderr
    val = minidl.load(tmp_path / "model.safetensors")["history"][-1][2]
    assert r.stdout.startswith("gpt on shakespeare: train loss") and f"val loss {val:.4f}" in r.stdout       # the run's own estimate
    assert "--dataset" in _minidl("eval", "--help").stdout                          # the classifiers' command, as before

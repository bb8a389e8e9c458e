"""`minidl train` as a user meets it: bad options are one line and exit 2, Ctrl-C keeps every finished epoch and exits 130,
and --resume finishes the run exactly as the run that never stopped."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minidl

MINIDL = str(Path(sys.executable).with_name("minidl"))       # the console script `pip install` made
RUN = ["--dataset", "digits", "--epochs", "12", "--batch-size", "64", "--seed", "3"]


def _minidl(*args, **kw):
    return subprocess.run([MINIDL, *args], capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "lr (--lr) must be a positive, finite number, got nan"),
    (["--epochs", "0"], "epochs (--epochs) must be an integer >= 1, got 0"),
    (["--out", "/etc/passwd/run"], "out (--out): cannot write to /etc/passwd/run (Not a directory)"),
    (["--valid-fraction", "1"], "valid_fraction (--valid-fraction) must be a fraction between 0 and 1, got 1.0"),
])
def test_a_bad_option_is_one_line_and_exit_2(args, message):
    r = _minidl("train", *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1] == f"minidl train: error: {message}"


def test_eval_of_a_missing_file_is_one_line_and_exit_2(tmp_path):
    r = _minidl("eval", str(tmp_path / "nothing.safetensors"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such checkpoint" in r.stderr


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes_the_same_run(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert _minidl("train", *RUN, "--out", str(straight)).returncode == 0
    # a background job's children inherit an ignored SIGINT (and Python then installs no KeyboardInterrupt): give it back
    proc = subprocess.Popen([MINIDL, "train", *RUN, "--out", str(stopped)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = stopped / "last.safetensors"
    while not last.exists() and proc.poll() is None: time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "interrupted; the last finished epoch is saved in" in err and "Traceback" not in err
    epoch = minidl.load(last)["epoch"]
    assert epoch < 11, "the run finished before Ctrl-C arrived"
    r = _minidl("train", "--resume", str(last))
    assert r.returncode == 0, r.stderr
    assert f"resuming at epoch {epoch + 2} of 12" in r.stdout
    a, b = minidl.load(straight / "model.safetensors"), minidl.load(stopped / "model.safetensors")
    assert a["metrics"]["valid_loss"] == b["metrics"]["valid_loss"] and a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]
    for k in a["model"]: np.testing.assert_array_equal(b["model"][k].numpy(), a["model"][k].numpy(), err_msg=k)


def test_import_without_a_writable_cache_falls_back_with_one_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MINIDL_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_CACHE_DIR")}
    env["HOME"] = "/etc/passwd"                     # ~/.cache cannot be made below a file, even by root
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-W", "always", "-c", "import minidl; print(minidl.core.kernel_cache_dir())"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("cannot write the cache directory") == 1
    assert r.stdout.strip().startswith(str(tmp_path))


def test_train_validates_on_held_out_training_data_and_measures_the_test_set_once(tmp_path):
    r = _minidl("train", "--dataset", "digits", "--epochs", "2", "--valid-fraction", "0.25", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "(1078 train / 360 validation samples" in r.stdout        # digits: 1,438 training images, a quarter held out
    assert r.stdout.count("test accuracy") == 1
    ckpt = minidl.load(tmp_path / "model.safetensors")
    assert ckpt["config"]["valid_fraction"] == 0.25
    evaluated = _minidl("eval", str(tmp_path / "model.safetensors"))
    assert f"accuracy {ckpt['metrics']['test_accuracy']:.4f}" in evaluated.stdout     # `minidl eval` reports the test set too
    assert ckpt["metrics"]["test_accuracy"] != ckpt["metrics"]["accuracy"]            # 359 test images are not the 360 validation images

"""`minidl serve` (lesson 26): answers equal to the model's, every bad request a 4xx that says why, the token, the size limit,
and a real server under concurrent load with no errors."""
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

import minidl
from minidl import serve
from minidl.lm import load_lm, sample_from, train_lm
from minidl.train import load_model, train

TOKEN = "a-test-token-of-some-length"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    with contextlib.redirect_stderr(io.StringIO()):
        train(epochs=1, out=folder / "mlp", print_fn=lambda *a: None)
    train_lm(model="gpt", iters=2, n_layer=1, n_embd=16, n_head=2, block_size=16, batch_size=2, eval_interval=2, eval_iters=1,
             sample_chars=1, out=folder / "gpt", print_fn=lambda *a: None)
    return folder / "mlp" / "model.safetensors", folder / "gpt" / "model.safetensors"


@pytest.fixture(scope="module")
def samples():
    return minidl.data.mnist1d()[1].tensors[0][:5].numpy()


def test_predict_answers_with_the_models_probabilities_for_one_sample_and_a_batch(checkpoints, samples):
    client = TestClient(serve.create_app(checkpoints[0]))
    net, _ = load_model(checkpoints[0])
    with minidl.no_grad(): want = minidl.softmax(net(minidl.tensor(samples)), -1).numpy()
    batch = client.post("/predict", json={"inputs": samples.tolist()})
    assert batch.status_code == 200 and batch.json()["predictions"] == want.argmax(-1).tolist()
    np.testing.assert_allclose(batch.json()["probabilities"], want, atol=1e-6)
    one = client.post("/predict", json={"inputs": [int(v) if i % 2 else float(v) for i, v in enumerate(samples[2])]}).json()   # integers are numbers too
    assert isinstance(one["predictions"], int) and len(one["probabilities"]) == 10
    meta = client.get("/metadata").json()
    assert (meta["kind"], meta["endpoint"], meta["input_shape"], meta["input_dtype"], meta["classes"]) == ("classifier", "/predict", [40], "float32", 10)
    assert client.post("/generate", json={"prompt": "a"}).status_code == 404                  # a classifier has no /generate


@pytest.mark.parametrize("body, status, message", [
    (b"{inputs", 400, "not valid JSON"),
    (b'{"inputs": [\xff]}', 400, "not UTF-8"),
    (b'{"inputs": [NaN]}', 422, "NaN is not a number JSON allows"),
    (b'{"inputs": [Infinity]}', 422, "Infinity is not a number JSON allows"),
    (b"[1, 2]", 422, 'expected a JSON object {"inputs"'),
    (b'{"inputs": [1], "debug": true}', 422, "unknown field(s) ['debug']"),
    (json.dumps({"inputs": [[0.5] * 40, [0.5] * 39]}).encode(), 422, "not a rectangular array"),
    (json.dumps({"inputs": ["0.5"] * 40}).encode(), 422, "expected numbers, got strings"),
    (json.dumps({"inputs": [{"v": 1}] * 40}).encode(), 422, "expected numbers, got strings or objects"),
    (json.dumps({"inputs": [False] + [0.5] * 39}).encode(), 422, "got true/false"),
    (json.dumps({"inputs": [-1e39] * 40}).encode(), 422, "beyond float32's range"),
    (json.dumps({"inputs": [0.5] * 41}).encode(), 422, "got shape (41,); the model takes one sample of shape (40,)"),
    (json.dumps({"inputs": [[[0.5] * 40]]}).encode(), 422, "got shape (1, 1, 40)"),
    (json.dumps({"inputs": [[0.5] * 40] * 9}).encode(), 422, "1 ≤ B ≤ 8"),
    (b'{"inputs": [' + b"0," * 3000 + b"0]}", 413, "at most 5000 are accepted"),
])
def test_every_bad_request_is_a_4xx_that_says_what_was_wrong(checkpoints, body, status, message):
    client = TestClient(serve.create_app(checkpoints[0], max_request_bytes=5000, max_batch=8))
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and message in r.json()["detail"], (r.status_code, r.json())


def test_a_body_without_content_length_is_cut_off_at_the_limit(checkpoints):
    client = TestClient(serve.create_app(checkpoints[0], max_request_bytes=1000))
    def chunks():                                             # chunked transfer: no Content-Length to check up front
        yield b'{"inputs": ['
        for _ in range(100): yield b"0.5," * 10
    r = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over 1000 bytes" in r.json()["detail"]


def test_the_token_guards_every_endpoint_but_health(checkpoints, samples):
    client = TestClient(serve.create_app(checkpoints[0], token=TOKEN))
    assert client.get("/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = client.get("/metadata", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "access token" in r.json()["detail"]
        assert client.post("/predict", json={"inputs": samples[0].tolist()}, headers=headers).status_code == 401
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/metadata", headers=ok).status_code == 200
    assert client.post("/predict", json={"inputs": samples[0].tolist()}, headers=ok).status_code == 200


def test_generate_samples_as_lesson_23_and_checks_its_fields(checkpoints):
    client = TestClient(serve.create_app(checkpoints[1], max_new_tokens=50))
    r = client.post("/generate", json={"prompt": "AB", "max_new_tokens": 12, "num_samples": 2, "seed": 3, "top_k": 5, "temperature": 1.5})
    net, tok, _ = load_lm(checkpoints[1])
    with minidl.inference_mode(): want = sample_from(net, tok, "AB", 12, 1.5, 5, 2, 3)
    assert r.status_code == 200 and r.json() == {"samples": want}
    meta = client.get("/metadata").json()
    assert meta["kind"] == "language model" and meta["vocabulary"] == "".join(tok.itos) and meta["max_new_tokens"] == 50
    for payload, message in (({"prompt": "AB", "max_new_tokens": 51}, "from 1 to 50"), ({"prompt": 3}, "a non-empty string"),
                             ({"prompt": "A", "temperature": "hot"}, "a number above 0"), ({"prompt": "A", "num_samples": 17}, "from 1 to 16"),
                             ({"prompt": "A", "seed": 1.5}, "an integer, or null"), ({"prompt": "A€"}, "the characters '€' are not in the model's vocabulary")):
        r = client.post("/generate", json=payload)
        assert r.status_code == 422 and message in r.json()["detail"], (payload, r.json())
    assert client.post("/predict", json={"inputs": [1]}).status_code == 404


def test_is_loopback():
    assert all(serve.is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost"))
    assert not any(serve.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))


def run_serve(*args, env_token=None):
    env = {k: v for k, v in __import__("os").environ.items() if k != "MINIDL_SERVE_TOKEN"}
    if env_token: env["MINIDL_SERVE_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-c", "import sys, minidl.cli; sys.exit(minidl.cli.main())", "serve", *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_serve_refuses_to_start_where_it_would_be_unsafe_or_broken(checkpoints, tmp_path):
    r = run_serve(checkpoints[0], "--host", "0.0.0.0")
    assert r.returncode == 2 and "can be reached from other machines: set an access token" in r.stderr
    r = run_serve(checkpoints[0], "--host", "0.0.0.0", env_token="short")
    assert r.returncode == 2 and "at least 16 characters" in r.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    r = run_serve(tmp_path / "junk.safetensors")
    assert r.returncode == 2 and "junk.safetensors" in r.stderr
    r = run_serve(checkpoints[0], "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch must be at least 1" in r.stderr


def test_a_real_server_on_all_interfaces_with_a_token_answers_concurrent_callers_without_errors(checkpoints, samples):
    with serve.running_server(checkpoints[0], TOKEN, "--host", "0.0.0.0") as server:
        good = json.dumps({"inputs": samples[0].tolist()}).encode()
        refused = serve.load_test(server.port, "/predict", good, clients=2, requests=4)              # no token
        assert refused["errors"] == [401] * 4
        for bad in (b"{", b'{"inputs": [NaN]}', b'{"inputs": [1, 2]}'):                              # bad requests do not hurt the worker
            assert serve.load_test(server.port, "/predict", bad, clients=1, requests=1, token=TOKEN)["errors"][0] in (400, 422)
        r = serve.load_test(server.port, "/predict", good, clients=8, requests=200, token=TOKEN)
        assert r["errors"] == [] and len(r["latencies"]) == 200 and r["p99_ms"] >= r["p50_ms"] > 0
        assert server.process.poll() is None
    assert server.process.returncode is not None                                                 # stopped on leaving

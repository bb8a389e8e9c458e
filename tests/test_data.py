"""The download path of the IDX datasets, against a local HTTP server (these machines have no internet)."""
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path
import numpy as np
import pytest
from minidl import data

@pytest.fixture
def server(tmp_path):
    "Serve tmp_path/'www' on 127.0.0.1; yield its base URL."
    www = tmp_path / "www"; www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()

def fake_mnist(www: Path, n=6, seed=0):
    rng = np.random.default_rng(seed)
    imgs, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    data.write_idx(www / "t10k-images-idx3-ubyte.gz", imgs); data.write_idx(www / "t10k-labels-idx1-ubyte.gz", labels)
    return imgs, labels

def make_class(base_url, www, mirrors=None):
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in www.glob("*.gz")}
    return type("FakeMNIST", (data.MNIST,), {"mirrors": tuple(mirrors or [base_url]), "files": files})

def test_download_parses_and_caches(server, tmp_path):
    url, www = server
    imgs, labels = fake_mnist(www)
    cls = make_class(url, www)
    ds = cls(tmp_path / "cache", train=False)
    np.testing.assert_allclose(ds.tensors[0].numpy()[:, 0], imgs / 255, atol=1e-7)
    assert ds.tensors[1].tolist() == labels.tolist()
    (www / "t10k-images-idx3-ubyte.gz").unlink()          # the second time nothing is fetched
    assert len(cls(tmp_path / "cache", train=False)) == len(imgs)

def test_wrong_checksum_is_rejected_and_not_saved(server, tmp_path):
    url, www = server
    fake_mnist(www)
    cls = make_class(url, www)
    cls.files = {k: "0" * 64 for k in cls.files}
    with pytest.raises(ConnectionError, match="SHA-256 is .* expected 0000"):
        cls(tmp_path / "cache", train=False)
    assert not any((tmp_path / "cache").glob("*.gz"))

def test_falls_back_to_the_next_mirror(server, tmp_path):
    url, www = server
    fake_mnist(www)
    cls = make_class(url, www, mirrors=["http://127.0.0.1:9/", url])   # port 9: nothing listens
    assert len(cls(tmp_path / "cache", train=False)) == 6

def test_unreachable_everywhere_names_the_file(tmp_path):
    cls = type("Offline", (data.MNIST,), {"mirrors": ("http://127.0.0.1:9/",)})
    with pytest.raises(ConnectionError, match="every mirror failed for t10k-images-idx3-ubyte.gz"):
        cls(tmp_path, train=False)

def test_corrupt_file_in_cache_is_refetched(server, tmp_path):
    url, www = server
    fake_mnist(www)
    cls = make_class(url, www)
    cache = tmp_path / "cache"; cache.mkdir()
    (cache / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    assert len(cls(cache, train=False)) == 6

def test_truncated_idx_without_download_is_a_clear_error(tmp_path):
    fake_mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    import gzip
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.MNIST(tmp_path, train=False, download=False)

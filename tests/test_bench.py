"""The workloads of `minidl bench` (lesson 95) that time each framework in worker processes of its own, each run once on tiny sizes:
every table fills its rows with positive numbers and its target checks with values (PyTorch's columns too, as it is installed by `.[dev]`)."""
import pytest

from minidl import bench

TORCH = bench.load_torch(2)

WORKER_TABLES = {
    "softmax": lambda: bench.bench_softmax(TORCH, shapes=((8, 5),), ops=("cross_entropy fwd+bwd",), rounds=1),
    "mlp_epoch": lambda: bench.bench_mlp_epoch(TORCH, n=512, rounds=1),
    "conv2d": lambda: bench.bench_conv2d(TORCH, n=2, c=4, hw=8, rounds=1),
    "lenet_epoch": lambda: bench.bench_lenet_epoch(TORCH, n=256, rounds=1),
}


@pytest.mark.parametrize("name", WORKER_TABLES)
def test_worker_workload_fills_its_table(name):
    table = WORKER_TABLES[name]()
    numbers = [c for c in table.rows[0] if isinstance(c, float)]
    assert numbers and all(c > 0 for c in numbers), table.rows[0]
    assert table.checks and all(c["value"] is not None and c["value"] > 0 for c in table.checks), table.checks

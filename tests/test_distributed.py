"""Data-parallel training over MPI (lesson 25), in real `mpirun -np 2` jobs: collectives against NumPy, DistributedDataParallel
against one process on the same data, the sampler against PyTorch's, the Learner and `minidl train --nproc`, and failures that end
the job instead of hanging it."""
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import minidl
import minidl.distributed as dist
from minidl import nn


def job(tmp_path, code: str, *args, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    "Run `code` as an MPI job of `nproc` processes."
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(code))
    return dist.launch(nproc, [path, *args], capture_output=True, timeout=timeout)


def result(r: subprocess.CompletedProcess):
    "The JSON line rank 0 printed last."
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


COLLECTIVES = """
    import datetime, json, os, time
    import numpy as np
    import minidl, minidl.distributed as dist
    out = {"before": dist.is_initialized()}
    dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    out.update(initialized=dist.is_initialized(), world=world, backend=dist.get_backend(),
               env=[os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")])
    values = np.array([[1.5, -2.0, 3.0], [0.5, 4.0, -1.0]])
    for op in ("SUM", "AVG", "PRODUCT", "MIN", "MAX"):
        for dtype in ("float32", "float64", "bfloat16", "float16", "int64", "int32", "uint8"):
            if op == "AVG" and not dtype.startswith(("float", "bfloat")): continue
            v = values[rank] if dtype.startswith(("float", "bfloat")) else np.abs(values[rank]).astype(int) + rank
            t = minidl.tensor(v, dtype=getattr(minidl, dtype))
            dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
            out[f"{op} {dtype}"] = t.double().tolist()
    flags = minidl.tensor([rank == 0, False, True]); dist.all_reduce(flags, op=dist.ReduceOp.MAX); out["bool MAX"] = flags.tolist()
    m = minidl.arange(6.0).reshape(2, 3) * (rank + 1); view = m.t()
    dist.all_reduce(view); out["non-contiguous"] = m.tolist()               # the view's values are written back through it
    w = minidl.full((4,), float(rank + 1)); work = dist.all_reduce(w, async_op=True)
    out["async"] = [work.wait(), work.is_completed(), w.tolist()]
    b = minidl.arange(3.0) + 10 * rank; dist.broadcast(b, src=1); out["broadcast"] = b.tolist()
    parts = [minidl.zeros(2, dtype=minidl.int64) for _ in range(world)]
    dist.all_gather(parts, minidl.tensor([rank, rank * 10])); out["all_gather"] = [p.tolist() for p in parts]
    into = minidl.zeros(2 * world, 2); dist.all_gather_into_tensor(into, minidl.full((2, 2), float(rank)))
    out["all_gather_into_tensor"] = into.tolist()
    errors = {}
    for name, call in (("avg int", lambda: dist.all_reduce(minidl.tensor([1]), op=dist.ReduceOp.AVG)),
                       ("op", lambda: dist.all_reduce(minidl.tensor([1.0]), op="sum")),
                       ("src", lambda: dist.broadcast(minidl.tensor([1.0]), src=world)),
                       ("list", lambda: dist.all_gather([minidl.zeros(2)], minidl.zeros(2))),
                       ("shape", lambda: dist.all_gather([minidl.zeros(3), minidl.zeros(3)], minidl.zeros(2))),
                       ("twice", lambda: dist.init_process_group()),
                       ("group", lambda: dist.get_rank(group=object()))):
        try: call(); errors[name] = None
        except (TypeError, ValueError, RuntimeError) as e: errors[name] = f"{type(e).__name__}: {e}"
    out["errors"] = errors
    sampler = dist.DistributedSampler(range(5), shuffle=False)          # rank and number of replicas from the group
    out["sampler"] = [sampler.rank, sampler.num_replicas, list(sampler)]
    if rank == 1: time.sleep(0.5)
    t0 = time.perf_counter(); dist.barrier(); out["barrier waited"] = time.perf_counter() - t0
    dist.destroy_process_group()
    out["after"] = dist.is_initialized()
    if rank == 0: print(json.dumps(out))
"""


def test_collectives_give_numpys_results_on_every_dtype(tmp_path):
    got = result(job(tmp_path, COLLECTIVES))
    assert (got["before"], got["initialized"], got["after"], got["world"], got["backend"]) == (False, True, False, 2, "mpi")
    assert got["env"] == ["0", "2", "0", "2"]
    values = np.array([[1.5, -2.0, 3.0], [0.5, 4.0, -1.0]])
    ints = np.abs(values).astype(int) + np.array([[0], [1]])
    reduce = {"SUM": np.sum, "AVG": np.mean, "PRODUCT": np.prod, "MIN": np.min, "MAX": np.max}
    for key, value in got.items():
        if key.split(" ")[0] in reduce:
            op, dtype = key.split(" ")
            floating = dtype.startswith(("float", "bfloat"))
            want = reduce[op]((values if floating else ints), axis=0)
            tol = {"bfloat16": 2e-2, "float16": 2e-3}.get(dtype, 1e-6)
            np.testing.assert_allclose(value, want, rtol=tol, err_msg=key)
    assert got["bool MAX"] == [True, False, True]
    assert got["non-contiguous"] == (np.arange(6.0).reshape(2, 3) * 3).tolist()
    assert got["async"] == [True, True, [3.0] * 4]
    assert got["broadcast"] == [10.0, 11.0, 12.0]
    assert got["all_gather"] == [[0, 0], [1, 10]]
    assert got["all_gather_into_tensor"] == [[0.0, 0.0]] * 2 + [[1.0, 1.0]] * 2
    e = got["errors"]
    assert e["avg int"].startswith("TypeError") and "floating-point" in e["avg int"]
    assert e["op"].startswith("TypeError") and "ReduceOp" in e["op"]
    assert "src must be a rank in [0, 1]" in e["src"]
    assert "one tensor per rank (2)" in e["list"] and "must be like the input" in e["shape"]
    assert "twice" in e["twice"] and "one process group" in e["group"]
    assert got["barrier waited"] > 0.4
    assert got["sampler"] == [0, 2, [0, 2, 4]]


def test_ring_all_reduce_equals_mpis_on_three_processes(tmp_path):
    got = result(job(tmp_path, """
        import json
        import numpy as np
        import minidl.distributed as dist
        from mpi4py import MPI
        dist.init_process_group()
        out = {}
        for n in (1, 2, 7, 1000):                              # fewer values than ranks, uneven chunks, many
            x = np.random.default_rng(dist.get_rank()).standard_normal(n)
            want = x.copy(); MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, want)
            out[n] = float(np.abs(dist.ring_all_reduce(x) - want).max())
        if dist.get_rank() == 0: print(json.dumps(out))
    """, nproc=3))
    assert max(got.values()) < 1e-12, got


DDP_VS_ONE = """
    import json, sys
    import numpy as np
    import minidl, minidl.distributed as dist
    from minidl import nn
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    X = np.random.default_rng(0).standard_normal((20 * 32, 12)); Y = np.random.default_rng(1).integers(0, 5, 20 * 32)

    def run(dtype, cap, distributed):
        minidl.set_default_dtype(dtype)
        minidl.manual_seed(rank if distributed else 0)       # the ranks start apart: DDP must give them rank 0's weights
        model = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
        net = dist.DistributedDataParallel(model, bucket_cap_mb=cap) if distributed else model
        opt = minidl.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        losses = []
        for step in range(20):
            lo, hi = (step * 32 + rank * 16, step * 32 + rank * 16 + 16) if distributed else (step * 32, step * 32 + 32)
            loss = nn.functional.cross_entropy(net(minidl.tensor(X[lo:hi], dtype=dtype)), minidl.tensor(Y[lo:hi]))
            opt.zero_grad(); loss.backward(); opt.step()
            if distributed: loss = loss.detach().clone(); dist.all_reduce(loss, op=dist.ReduceOp.AVG)
            losses.append(loss.item())
        weights = minidl.cat([p.detach().double().flatten() for p in model.parameters()])
        gathered = [minidl.zeros_like(weights) for _ in range(world)]; dist.all_gather(gathered, weights)
        minidl.set_default_dtype(minidl.float32)
        return {"losses": losses, "weights": weights.tolist(), "ranks_differ": (gathered[0] - gathered[1]).abs().max().item(),
                "buckets": len(net.buckets) if distributed else 1}

    out = {}
    for dtype in (minidl.float64, minidl.float32):
        one = run(dtype, 25, False)
        for cap in (0.001, 25):
            two = run(dtype, cap, True)
            out[f"{np.dtype(dtype).name} {cap}"] = {"loss": float(np.abs(np.subtract(two["losses"], one["losses"])).max()),
                                     "weights": float(np.abs(np.subtract(two["weights"], one["weights"])).max()),
                                     "ranks_differ": two["ranks_differ"], "buckets": two["buckets"]}
    if rank == 0: print(json.dumps(out))
"""


def test_ddp_takes_the_steps_of_one_process_with_the_whole_batch(tmp_path):
    "The issue's check: 20 SGD steps, per-rank batch 16 against one process with batch 32 on the same data order."
    got = result(job(tmp_path, DDP_VS_ONE))
    for key, r in got.items():
        tol = 1e-12 if "float64" in key else 1e-5
        assert r["loss"] < tol and r["weights"] < tol, (key, r)
        assert r["ranks_differ"] == 0.0, (key, r)                # identical on both ranks, bit for bit
    assert got["float64 0.001"]["buckets"] == 6 and got["float64 25"]["buckets"] == 1


DDP_FEATURES = """
    import json
    import numpy as np
    import minidl, minidl.distributed as dist
    from minidl import nn
    dist.init_process_group()
    rank = dist.get_rank()
    out = {}
    minidl.set_default_dtype(minidl.float64)
    X = minidl.tensor(np.random.default_rng(0).standard_normal((64, 6)))

    # no_sync: two micro-batches accumulated locally, then one averaged step equals the whole batch
    minidl.manual_seed(0)
    model = nn.Linear(6, 3); ddp = dist.DistributedDataParallel(model)
    with ddp.no_sync(): ddp(X[rank * 16:rank * 16 + 8]).pow(2).sum().backward()
    ddp(X[rank * 16 + 8:rank * 16 + 16]).pow(2).sum().backward()
    minidl.manual_seed(0); ref = nn.Linear(6, 3); ref(X[:32]).pow(2).sum().backward()
    out["no_sync"] = float((model.weight.grad * 2 - ref.weight.grad).abs().max())

    # buffers: rank 0's running statistics reach every rank at each forward (eval mode: the forward changes none)
    minidl.manual_seed(0)
    bn = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)); ddp = dist.DistributedDataParallel(bn)
    if rank == 1: bn[1].running_mean.fill_(5.0)
    ddp.eval(); ddp(X[rank * 8:rank * 8 + 8])
    means = [minidl.zeros(4, dtype=minidl.float64) for _ in range(2)]; dist.all_gather(means, bn[1].running_mean)
    out["running means equal"] = bool((means[0] == means[1]).all().item()) and means[0].abs().max().item() == 0.0
    out["state_dict"] = sorted(ddp.state_dict())[:2]

    # a parameter left out of the loss: without find_unused_parameters the next forward says which
    class Branchy(nn.Module):
        def __init__(self): super().__init__(); self.a, self.b = nn.Linear(6, 2), nn.Linear(6, 2)
        def forward(self, x, use_b): return self.a(x) + (self.b(x) if use_b else 0)
    minidl.manual_seed(0); net = Branchy(); ddp = dist.DistributedDataParallel(net)
    ddp(X[:4], False).sum().backward()
    try: ddp(X[:4], False); out["unused"] = None
    except RuntimeError as e: out["unused"] = str(e)

    # ...and with it: b is used on rank 0 only, so its gradient is rank 0's divided by two; a parameter used nowhere keeps no grad
    minidl.manual_seed(0); net = Branchy(); net.c = nn.Linear(6, 2)
    ddp = dist.DistributedDataParallel(net, find_unused_parameters=True)
    for _ in range(2):
        net.zero_grad()
        ddp(X[:4], rank == 0).sum().backward()
    minidl.manual_seed(0); solo = Branchy(); solo(X[:4], True).sum().backward()
    out["b grad"] = float((net.b.weight.grad - solo.b.weight.grad / 2).abs().max())
    out["c grad"] = net.c.weight.grad is None
    if rank == 0: print(json.dumps(out))
"""


def test_ddp_no_sync_buffers_and_unused_parameters_as_pytorch(tmp_path):
    got = result(job(tmp_path, DDP_FEATURES))
    assert got["no_sync"] < 1e-12
    assert got["running means equal"] and got["state_dict"] == ["module.0.bias", "module.0.weight"]
    assert "Expected to have finished reduction in the prior iteration" in got["unused"] and "module.b.weight" in got["unused"]
    assert "find_unused_parameters=True" in got["unused"] and "module.a.weight" not in got["unused"]
    assert got["b grad"] < 1e-12 and got["c grad"] is True


def test_ddp_refuses_ranks_with_different_models(tmp_path):
    r = job(tmp_path, """
        import minidl.distributed as dist
        from minidl import nn
        dist.init_process_group()
        dist.DistributedDataParallel(nn.Linear(4, 3 + dist.get_rank()))
    """, timeout=60)
    assert r.returncode != 0 and "every rank must build the same model" in r.stderr


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    t0 = time.perf_counter()
    r = job(tmp_path, """
        import minidl, minidl.distributed as dist
        dist.init_process_group()
        if dist.get_rank() == 1: raise ValueError("bad batch on rank 1")
        dist.all_reduce(minidl.ones(3))                   # rank 0 waits for a rank that is gone
    """, timeout=60)
    assert r.returncode != 0 and "[rank 1] ValueError: bad batch on rank 1" in r.stderr
    assert time.perf_counter() - t0 < 30


def test_a_rank_that_never_arrives_times_out_the_others(tmp_path):
    t0 = time.perf_counter()
    r = job(tmp_path, """
        import datetime, time
        import minidl, minidl.distributed as dist
        dist.init_process_group(timeout=datetime.timedelta(seconds=2))
        if dist.get_rank() == 1: time.sleep(60)           # stuck, not failed
        dist.all_reduce(minidl.ones(3))
    """, timeout=60)
    assert r.returncode != 0 and "[rank 0] RuntimeError: rank 0: all_reduce(SUM) did not complete within 2 s" in r.stderr
    assert time.perf_counter() - t0 < 30


def test_init_process_group_checks_what_it_is_told_against_mpi(tmp_path):
    r = job(tmp_path, """
        import minidl.distributed as dist
        dist.init_process_group(world_size=3)
    """, timeout=60)
    assert r.returncode != 0 and "world_size=3, but MPI started this process as world_size 2" in r.stderr
    with pytest.raises(ValueError, match="backend 'nccl' is not available"): dist.init_process_group("nccl")
    with pytest.raises(RuntimeError, match="has not been initialized"): dist.get_rank()


@pytest.mark.parametrize("n", [0, 1, 5, 10, 13])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_indices_equal_pytorchs_without_shuffling(n, replicas, drop_last):
    for rank in range(replicas):
        ours = dist.DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (16, 4, False), (3, 5, False)])
def test_shuffled_shares_have_pytorchs_sizes_and_partition_the_data(n, replicas, drop_last):
    for epoch in (0, 1):
        shares = []
        for rank in range(replicas):
            s = dist.DistributedSampler(range(n), replicas, rank, seed=7, drop_last=drop_last); s.set_epoch(epoch)
            t = torch.utils.data.DistributedSampler(range(n), replicas, rank, seed=7, drop_last=drop_last)
            shares.append(list(s))
            assert len(shares[-1]) == len(s) == len(t) == len(list(t))
        flat = [i for share in shares for i in share]
        assert set(flat) == (set(range(n)) if not drop_last else set(flat)) and len(set(flat)) == min(n, len(flat))
    first = [list(dist.DistributedSampler(range(n), replicas, 0, seed=7))]
    assert first == [list(dist.DistributedSampler(range(n), replicas, 0, seed=7))]    # seed and epoch decide


def test_sampler_refuses_a_rank_outside_the_group():
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval \[0, 2\]"): dist.DistributedSampler(range(5), 3, 3)
    with pytest.raises(RuntimeError, match="has not been initialized"): dist.DistributedSampler(range(5))


LEARNER = """
    import json, sys
    import numpy as np
    import minidl, minidl.distributed as dist
    from minidl import nn
    from minidl.data import TensorDataset, DataLoader
    from minidl.learner import DataLoaders, Learner, SaveModelCallback, CancelFitException, Callback, accuracy
    mode, folder = sys.argv[1], sys.argv[2]
    if mode != "one": dist.init_process_group()
    minidl.set_default_dtype(minidl.float64)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((96, 8)), rng.integers(0, 3, 96)
    train, valid = TensorDataset(minidl.tensor(X[:64]), minidl.tensor(Y[:64])), TensorDataset(minidl.tensor(X[64:]), minidl.tensor(Y[64:]))
    class StopAfterFirstEpoch(Callback):
        order = 100                                          # after the checkpoint is written
        def after_epoch(self): raise CancelFitException()
    def learner():
        minidl.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        return Learner(model, DataLoaders(DataLoader(train, 16), DataLoader(valid, 10)), opt_func=minidl.optim.SGD, lr=0.1,
                       metrics=[accuracy], cbs=[SaveModelCallback(folder + "/last.safetensors", every_epoch=True)])
    learn = learner()
    if mode != "one": learn.to_distributed()
    if mode == "first epoch": learn.fit(3, cbs=[StopAfterFirstEpoch()])
    elif mode == "resume":
        learn.fit(3, start_epoch=learn.load_checkpoint(folder + "/last.safetensors")["epoch"] + 1)
    else: learn.fit(3)
    weights = minidl.cat([p.detach().flatten() for p in learn.model.parameters()]).tolist()
    if mode == "one" or dist.get_rank() == 0:
        print(json.dumps({"values": learn.recorder.values, "losses": learn.recorder.losses, "weights": weights,
                          "model": type(learn.model).__name__, "cbs": [type(c).__name__ for c in learn.cbs]}))
"""


def test_a_learner_on_two_processes_trains_as_one_and_resumes_from_its_checkpoints(tmp_path):
    path = tmp_path / "learner.py"
    path.write_text(textwrap.dedent(LEARNER))
    one = json.loads(subprocess.run([sys.executable, path, "one", tmp_path], capture_output=True, text=True, check=True).stdout)
    two = result(dist.launch(2, [path, "two", tmp_path], capture_output=True, timeout=120))
    # unshuffled: rank r takes rows r, r+2, … of each 16-row batch, so every step averages the same 16 rows as one process
    for a, b in zip(one["values"], two["values"]):
        for key in ("train_loss", "valid_loss", "accuracy"): assert abs(a[key] - b[key]) < 1e-12, (key, a, b)
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-12)
    np.testing.assert_allclose(two["weights"], one["weights"], atol=1e-12)
    assert two["model"] == "Sequential" and "DistributedTrainer" in two["cbs"]
    # stopped after epoch 0, resumed on every rank from rank 0's checkpoint: the same end as the uninterrupted run
    result(dist.launch(2, [path, "first epoch", tmp_path], capture_output=True, timeout=120))
    ckpt = minidl.load(tmp_path / "last.safetensors")
    assert ckpt["epoch"] == 0 and not any(k.startswith("module.") for k in ckpt["model"])
    resumed = result(dist.launch(2, [path, "resume", tmp_path], capture_output=True, timeout=120))
    np.testing.assert_allclose(resumed["weights"], one["weights"], atol=1e-12)


def test_minidl_train_nproc_trains_on_two_processes_and_rank_0_writes(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import sys, minidl.cli; sys.exit(minidl.cli.main())", "train", "--nproc", "2",
                          "--epochs", "2", "--out", tmp_path], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 1 and run.stdout.count("training mlp on mnist1d") == 1
    assert {p.name for p in tmp_path.iterdir()} >= {"last.safetensors", "best.safetensors", "model.safetensors", "loss.png"}
    final = minidl.load(tmp_path / "model.safetensors")
    assert final["config"]["batch_size"] == 128 and final["metrics"]["accuracy"] > 0.3
    bad = subprocess.run([sys.executable, "-c", "import sys, minidl.cli; sys.exit(minidl.cli.main())", "train", "--nproc", "2",
                          "--batch-size", "3", "--out", tmp_path / "bad"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.count("does not split evenly over 2 processes") == 1


def test_mpirun_command_as_root_and_oversubscribed(monkeypatch):
    monkeypatch.setattr(dist.os, "geteuid", lambda: 0)
    cmd = dist.mpirun_command(64, ["train.py"])
    assert cmd[1:3] == ["-np", "64"] and "--allow-run-as-root" in cmd and "--oversubscribe" in cmd
    assert cmd[-2:] == [sys.executable, "train.py"] and "NUMBA_NUM_THREADS=1" in cmd
    monkeypatch.setattr(dist.os, "geteuid", lambda: 1000)
    assert "--allow-run-as-root" not in dist.mpirun_command(1, ["train.py"]) and "--oversubscribe" not in dist.mpirun_command(1, ["x"])
    with pytest.raises(ValueError, match="nproc must be an integer >= 1"): dist.mpirun_command(0, ["x"])
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert dist.launched_by_mpi()


def test_train_help_lists_nproc_and_language_models_refuse_it(capsys):
    from minidl.cli import main
    with pytest.raises(SystemExit) as e: main(["train", "--help"])
    assert e.value.code == 0 and "--nproc NPROC" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e: main(["train", "--model", "gpt", "--nproc", "2"])
    assert e.value.code == 2 and "language models (--model gpt|lstm) train in one process" in capsys.readouterr().err


def test_gpu_tensors_travel_through_host_memory(tmp_path):
    "On the GPU (numba's simulator without one): collectives and DDP stage through host memory and give the CPU's results."
    got = result(job(tmp_path, """
        import json
        import numpy as np
        import minidl, minidl.distributed as dist
        from minidl import nn
        dist.init_process_group()
        rank = dist.get_rank()
        x = (minidl.arange(4.0) * (rank + 1)).to("cuda"); dist.all_reduce(x, op=dist.ReduceOp.AVG)
        b = minidl.full((3,), float(rank)).to("cuda"); dist.broadcast(b, src=1)
        grads = {}
        for device in ("cpu", "cuda"):
            minidl.manual_seed(rank)
            model = nn.Linear(3, 2).to(device); ddp = dist.DistributedDataParallel(model)
            ddp(minidl.ones(4, 3).to(device) * (rank + 1)).sum().backward()
            grads[device] = [p.grad.cpu().tolist() for p in model.parameters()] + [model.weight.grad.device.type]
        if rank == 0: print(json.dumps({"avg": x.cpu().tolist(), "device": x.device.type, "bcast": b.cpu().tolist(), "grads": grads}))
    """, timeout=180))
    assert got["avg"] == [0.0, 1.5, 3.0, 4.5] and got["device"] == "cuda" and got["bcast"] == [1.0] * 3
    assert got["grads"]["cuda"][:-1] == got["grads"]["cpu"][:-1] and got["grads"]["cuda"][-1] == "cuda"


SYNC_BN = """
    import json
    import numpy as np
    import minidl, minidl.distributed as dist
    from minidl import nn
    dist.init_process_group()
    rank = dist.get_rank()
    minidl.set_default_dtype(minidl.float64)
    X, Y = np.random.default_rng(0).standard_normal((40, 2, 6, 6)) * 2 + 1, np.random.default_rng(1).integers(0, 4, 40)
    def net():
        minidl.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    model = nn.SyncBatchNorm.convert_sync_batchnorm(net())
    ddp = dist.DistributedDataParallel(model)
    opt = minidl.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    for step, per_rank in enumerate([4, 4, 4, 1, 1]):               # a batch of one per rank: two values per channel in all
        start = sum(2 * b for b in [4, 4, 4, 1, 1][:step])
        rows = slice(start + rank * per_rank, start + (rank + 1) * per_rank)
        loss = nn.functional.cross_entropy(ddp(minidl.tensor(X[rows])), minidl.tensor(Y[rows]))
        opt.zero_grad(); loss.backward(); opt.step()
    model.eval()
    out = {"type": type(model[1]).__name__, "state": {k: v.tolist() for k, v in model.state_dict().items()},
           "eval": model(minidl.tensor(X[:3])).tolist()}
    if rank == 0: print(json.dumps(out))
"""


def test_sync_batchnorm_under_ddp_trains_as_one_process_with_the_whole_batch(tmp_path):
    got = result(job(tmp_path, SYNC_BN))
    minidl.set_default_dtype(minidl.float64)
    try:
        X, Y = np.random.default_rng(0).standard_normal((40, 2, 6, 6)) * 2 + 1, np.random.default_rng(1).integers(0, 4, 40)
        minidl.manual_seed(0)
        ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
        opt = minidl.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
        start = 0
        for batch in (8, 8, 8, 2, 2):
            loss = nn.functional.cross_entropy(ref(minidl.tensor(X[start:start + batch])), minidl.tensor(Y[start:start + batch]))
            opt.zero_grad(); loss.backward(); opt.step(); start += batch
        ref.eval()
        assert got["type"] == "SyncBatchNorm"
        for k, v in ref.state_dict().items(): np.testing.assert_allclose(got["state"][k], v.numpy(), atol=1e-12, err_msg=k)
        np.testing.assert_allclose(got["eval"], ref(minidl.tensor(X[:3])).detach().numpy(), atol=1e-12)
    finally: minidl.set_default_dtype(minidl.float32)


def test_convert_sync_batchnorm_keeps_parameters_and_is_plain_batchnorm_in_one_process():
    minidl.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm1d(3)))
    weight, mean, keys = model[1].weight, model[1].running_mean, sorted(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model and type(model[1]).__name__ == type(model[2][0]).__name__ == "SyncBatchNorm"
    assert model[1].weight is weight and model[1].running_mean is mean and sorted(model.state_dict()) == keys
    x = minidl.randn(6, 4)
    minidl.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm1d(3)))
    np.testing.assert_allclose(model(x).detach().numpy(), plain(x).detach().numpy(), atol=1e-6)    # no process group: plain batch norm
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"): model(minidl.randn(1, 4))

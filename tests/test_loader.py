"""Lesson 08's samplers and DataLoader against PyTorch's (when installed): the same batch structure for every
combination of options, the same errors; and the worker processes: spawn as well as fork, a worker that dies."""
import os

import numpy as np
import pytest

import minidl
from minidl.utils import data

try: import torch, torch.utils.data as tdata
except ImportError: torch = None

X, Y = np.arange(22.0).reshape(11, 2), np.arange(11)


class Dying(data.Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): os._exit(3)


class Stream(data.IterableDataset):
    def __init__(self, n): self.n = n
    def __iter__(self): return iter(range(self.n))
    def __len__(self): return self.n


OPTIONS = [dict(batch_size=4), dict(batch_size=4, drop_last=True), dict(batch_size=None), dict(batch_size=3, num_workers=2),
           dict(batch_size=5, num_workers=2, drop_last=True, prefetch_factor=1)]


@pytest.mark.parametrize("kw", OPTIONS, ids=str)
def test_batches_as_pytorch_makes_them(kw):
    got = [[t.tolist() for t in b] if isinstance(b, (tuple, list)) else b.tolist() for b in data.DataLoader(data.TensorDataset(X, Y), **kw)]
    want = np.arange(11)
    n = len(data.DataLoader(data.TensorDataset(X, Y), **kw))
    if kw["batch_size"] is None: assert [g[1] for g in got] == want.tolist() and n == 11
    else:
        assert [g[1] for g in got] == [want[i:i + kw["batch_size"]].tolist() for i in range(0, n * kw["batch_size"], kw["batch_size"])]
    if torch is not None:
        tds = tdata.TensorDataset(torch.tensor(X), torch.tensor(Y))
        tkw = {k: v for k, v in kw.items() if k not in ("num_workers", "prefetch_factor")}
        twant = [[t.tolist() for t in b] for b in tdata.DataLoader(tds, **tkw)]
        assert got == twant and n == len(tdata.DataLoader(tds, **tkw))


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_dataset_batches_and_length(workers):
    dl = data.DataLoader(Stream(7), batch_size=3, num_workers=workers)
    got = sorted(sum((b.tolist() for b in dl), []))
    assert got == (list(range(7)) if workers == 0 else sorted(list(range(7)) * workers))   # each worker streams its own copy, as in PyTorch
    assert len(dl) == 3
    if torch is not None: assert len(tdata.DataLoader(Stream(7), batch_size=3)) == 3


def test_option_errors_are_pytorchs():
    ds = data.TensorDataset(X, Y)
    cases = [(dict(shuffle=True, sampler=data.SequentialSampler(ds)), "mutually exclusive with shuffle"),
             (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
             (dict(batch_size=None, drop_last=True), "disables auto-batching"),
             (dict(num_workers=-1), "num_workers option should be non-negative"),
             (dict(prefetch_factor=2), "prefetch_factor option could only be specified in multiprocessing"),
             (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message): data.DataLoader(ds, **kw)
        if torch is not None:
            with pytest.raises(ValueError): tdata.DataLoader(tdata.TensorDataset(torch.tensor(X), torch.tensor(Y)), **kw)


def test_spawned_workers_give_the_same_epoch_as_forked_ones():
    ds = data.TensorDataset(minidl.tensor(X), minidl.tensor(Y))
    epochs = [[b[1].tolist() for b in data.DataLoader(ds, 3, shuffle=True, num_workers=2, multiprocessing_context=ctx,
                                                       generator=minidl.Generator().manual_seed(1))] for ctx in ("spawn", "fork")]
    assert epochs[0] == epochs[1] and sorted(sum(epochs[0], [])) == list(range(11))


def test_a_dead_worker_is_reported_not_waited_for():
    with pytest.raises(RuntimeError, match=r"DataLoader worker \d \(pid \d+\) exited unexpectedly with exit code 3"):
        list(data.DataLoader(Dying(), 2, num_workers=2))


def test_weighted_sampler_without_replacement_draws_distinct_indices():
    s = list(data.WeightedRandomSampler([1.0, 2.0, 0.0, 4.0], 3, replacement=False, generator=minidl.Generator().manual_seed(0)))
    assert sorted(s) == [0, 1, 3]
    with pytest.raises(ValueError, match="can't draw 4 distinct indices from 3"): data.WeightedRandomSampler([1.0, 2.0, 0.0, 4.0], 4, replacement=False)


class FailsOnce(data.Dataset):
    "Each worker process fails on its first item, then serves normally."
    def __len__(self): return 6
    def __getitem__(self, i):
        if not getattr(self, "failed", False): self.failed = True; raise KeyError("first item of this worker")
        return i


def test_persistent_workers_recover_after_an_error():
    loader = data.DataLoader(FailsOnce(), 2, num_workers=2, persistent_workers=True, timeout=5)
    with pytest.raises(RuntimeError, match="first item of this worker"): list(loader)
    assert sorted(sum((b.tolist() for b in loader), [])) == list(range(6))      # nothing left owing from the failed epoch
    del loader

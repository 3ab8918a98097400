"""PrefetchDataLoader: the same batches as the plain DataLoader, pipeline errors raised on the training thread, the
background thread stopped when the iterator is done with."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch
from monai.data import DataLoader
from monai.transforms import Compose, RandGaussianNoised

from monai_siamese.data import PrefetchDataLoader, ResumableBatchSampler, SeededDataset


def _threads() -> int:
    return sum(t.name == "PrefetchDataLoader" for t in threading.enumerate())


def _dataset(fail_at: int | None = None):
    items = [{"image": torch.full((1, 4, 4), float(i))} for i in range(10)]

    def check(d):
        if fail_at is not None and int(d["image"][0, 0, 0].round()) == fail_at:
            raise ValueError(f"item {fail_at}: broken label file /data/case_{fail_at}.nii.gz")
        return d

    transform = Compose([check, RandGaussianNoised("image", prob=1.0, std=1.0)])
    return SeededDataset(items, transform)


def _batches(loader, n):
    it = iter(loader)
    out = [next(it)["image"].clone() for _ in range(n)]
    if hasattr(it, "close"):
        it.close()
    return out


def test_same_batches_as_the_plain_loader_and_resumes_at_a_position():
    ds = _dataset()
    plain = DataLoader(ds, batch_sampler=ResumableBatchSampler([10], [4], seed=3), num_workers=0)
    pre = PrefetchDataLoader(ds, prefetch=2, batch_sampler=ResumableBatchSampler([10], [4], seed=3), num_workers=0)
    for a, b in zip(_batches(plain, 7), _batches(pre, 7)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a resumed run (the sampler set to a position) gets the batches from there on
    pre.batch_sampler.set_position(5)
    plain.batch_sampler.set_position(5)
    torch.testing.assert_close(_batches(pre, 1)[0], _batches(plain, 1)[0], rtol=0, atol=0)
    assert isinstance(iter(PrefetchDataLoader(ds, prefetch=0, batch_size=2)), type(iter(DataLoader(ds, batch_size=2))))


def test_a_pipeline_error_is_raised_on_the_training_thread():
    before = _threads()
    loader = PrefetchDataLoader(_dataset(fail_at=6), batch_size=2, shuffle=False)
    it = iter(loader)
    assert next(it)["image"].shape[0] == 2  # items 0, 1
    next(it)  # items 2, 3
    next(it)  # items 4, 5
    with pytest.raises(RuntimeError, match="applying transform") as info:  # as MONAI raises it without the thread
        next(it)
    cause = info.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ValueError) and "case_6.nii.gz" in str(cause)
    assert _threads() == before
    with pytest.raises(StopIteration):
        next(it)


def test_finite_loader_ends_and_the_thread_stops():
    before = _threads()
    loader = PrefetchDataLoader(_dataset(), batch_size=3, shuffle=False)
    assert [b["image"].shape[0] for b in loader] == [3, 3, 3, 1]
    assert _threads() == before


def test_wait_idle_and_dropping_the_iterator_stop_the_work():
    before = _threads()
    loader = PrefetchDataLoader(_dataset(), prefetch=1, batch_sampler=ResumableBatchSampler([10], [2], seed=0))
    it = iter(loader)
    next(it)
    assert it.wait_idle(timeout=10)
    p = it._producer
    assert p.produced - p.consumed == 2  # one in the queue, one built and waiting to be put
    produced = p.produced
    time.sleep(0.2)
    assert p.produced == produced  # blocked, not building more
    del it, p
    gc.collect()
    for _ in range(100):  # the thread sees the stop within its put timeout
        if _threads() == before:
            break
        time.sleep(0.05)
    assert _threads() == before


def test_rejects_a_negative_prefetch():
    with pytest.raises(ValueError, match="prefetch"):
        PrefetchDataLoader(_dataset(), prefetch=-1)


def test_the_interpreter_exits_after_the_thread_finishes_its_batch(tmp_path):
    """A process that ends while the thread builds a batch waits for that batch (a daemon thread killed inside
    torch or numpy at exit can abort the process), then exits with 0."""
    import subprocess
    import sys

    marker = tmp_path / "built.txt"
    script = tmp_path / "exit_early.py"
    script.write_text(
        "import sys, time, torch\n"
        "from monai_siamese.data import PrefetchDataLoader\n"
        "class Slow(torch.utils.data.Dataset):\n"
        "    def __len__(self):\n"
        "        return 100\n"
        "    def __getitem__(self, i):\n"
        "        time.sleep(0.5)\n"
        "        with open(sys.argv[1], 'a') as f:\n"
        "            f.write(f'{i}\\n')\n"
        "        return torch.zeros(2)\n"
        "it = iter(PrefetchDataLoader(Slow(), batch_size=1))\n"
        "next(it)\n"  # item 0; the thread is now building item 1
    )
    r = subprocess.run([sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert marker.read_text().split() == ["0", "1"]  # item 1 finished, nothing started after the stop

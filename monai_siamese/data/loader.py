"""A data loader that prepares the next batch in a background thread while the current one trains.

With ``num_workers`` 0 (the CPU demo, small datasets) a ``DataLoader`` runs every per-item transform and the collation
on the training thread, between two optimizer steps. The network's kernels release the GIL, so a second thread can
build the next batch meanwhile; Python code on either thread still takes turns (MONAI's per-transform dispatch is
mostly Python), so on the CPU demo it hides only part of the pipeline (docs/results/benchmark_overhead, round 4).
With worker processes it also takes the collation, the hand-over from the workers and the pinning off the training
thread.

MONAI's :class:`monai.data.ThreadDataLoader` does the same with :class:`monai.data.ThreadBuffer`, but a transform that
raises in its thread ends the iteration silently (the thread dies, the buffer runs dry, the loop stops as if the data
were exhausted). Here the exception is raised on the training thread, unchanged, so a bad item still stops training
with the message that names it.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Iterator
from typing import Any

from monai.data import DataLoader

__all__ = ["PrefetchDataLoader"]

_END = object()
#: producers whose thread still runs (an exiting interpreter stops and joins them first: a daemon thread killed in the
#: middle of building a batch, inside torch or numpy, can abort the process at exit)
_RUNNING: set[_Producer] = set()
_RUNNING_LOCK = threading.Lock()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Producer:
    """The background thread and what it shares with the iterator (not the iterator itself, so that dropping the
    iterator stops the thread); the thread starts here."""

    def __init__(self, source: Iterator[Any], depth: int) -> None:
        self.source = source
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.cond = threading.Condition()
        self.produced = 0
        self.consumed = 0
        self.done = False
        self.depth = depth
        self.thread = threading.Thread(target=self._run, name="PrefetchDataLoader", daemon=True)
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self.thread.start()

    def halt(self, timeout: float | None = None) -> None:
        """Stop the thread after the batch it is building, and wait for it (unless called on it)."""
        self.stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            self._fill()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)

    def _fill(self) -> None:
        while not self.stop.is_set():
            try:
                item = next(self.source)
            except StopIteration:
                item = _END
            except BaseException as e:  # noqa: BLE001 - handed to the training thread, which raises it
                item = _Raised(e)
            with self.cond:
                self.produced += 1
                self.done = item is _END or isinstance(item, _Raised)
                self.cond.notify_all()
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if self.done:
                return

    def idle(self) -> bool:
        # every batch the thread may hold is built: the queue is full and one more waits to be put (or it ended)
        return self.done or self.produced - self.consumed >= self.depth + 1


class _PrefetchIterator:
    def __init__(self, source: Iterator[Any], depth: int) -> None:
        self._producer = _Producer(source, depth)

    def __iter__(self) -> _PrefetchIterator:
        return self

    def __next__(self) -> Any:
        p = self._producer
        if p.stop.is_set():
            raise StopIteration
        item = p.queue.get()
        with p.cond:
            p.consumed += 1
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Raised):
            self.close()
            raise item.error
        return item

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the thread has built every batch it may hold ahead (or ended), so no batch is being built
        in the background (a benchmark stops its clock here: the work is then counted to this loader)."""
        p = self._producer
        with p.cond:
            return p.cond.wait_for(p.idle, timeout)

    def close(self) -> None:
        """Stop the thread (it finishes the batch it is building) and drop what it built ahead."""
        p = self._producer
        p.halt()
        while not p.queue.empty():
            p.queue.get_nowait()

    def __del__(self) -> None:
        # ignite drops the iterator when a run ends: let the thread finish the batch it builds, so the process does
        # not go on (or exit) with it inside torch
        self._producer.halt(timeout=60)


@atexit.register
def _stop_running_producers() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for producer in running:  # all stop at once, then each is waited for
        producer.stop.set()
    for producer in running:
        producer.halt(timeout=60)


class PrefetchDataLoader(DataLoader):
    """``monai.data.DataLoader`` whose iterator builds up to ``prefetch`` + 1 batches ahead in a background thread
    (the thread blocks when ``prefetch`` wait in the queue); every other argument is the ``DataLoader``'s.

    Batches come in the order the sampler gives them and are the same batches as without the thread: per-item
    randomness must come from the item (as :class:`~monai_siamese.data.SeededDataset` seeds it), not from the order
    in which the thread meets the items. An exception of the data pipeline is raised by ``next`` on the calling
    thread. ``prefetch`` 0 is the plain ``DataLoader``.

    Args:
        dataset: the dataset.
        prefetch: batches waiting in the queue (>= 0).
        kwargs: ``monai.data.DataLoader`` arguments.
    """

    def __init__(self, dataset: Any, prefetch: int = 1, **kwargs: Any) -> None:
        if int(prefetch) < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        super().__init__(dataset, **kwargs)
        self.prefetch = int(prefetch)

    def __iter__(self) -> Iterator[Any]:
        source = super().__iter__()
        if self.prefetch == 0:
            return source
        return _PrefetchIterator(source, self.prefetch)

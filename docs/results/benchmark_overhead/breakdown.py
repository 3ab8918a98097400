"""Where a bundle's training iteration spends its time (round 7's diagnostic): perf-counter wrappers around the
trainer's prepare-batch, forward (the inferer), loss, ``Tensor.backward``, zero-grad and optimizer step, 6 blocks of
20 iterations alternated with the same-algorithm plain loop (``bench.bundle_setup.PlainLoop``, ``same_algorithm``).

    OMP_NUM_THREADS=1 python docs/results/benchmark_overhead/breakdown.py seg_guided_diffusion 32 '{"prefetch": 0}'
    SWI=0.0002 ...   # with a GIL switch interval of 0.2 ms

Prints ms per iteration of each part (the wrappers add a few microseconds each).
"""

import collections
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
torch.set_num_threads(1)
if os.environ.get("SWI"):
    sys.setswitchinterval(float(os.environ["SWI"]))
from bench.bundle_setup import PlainLoop, TrainerBlocks, bundle_parser  # noqa: E402

method, size = sys.argv[1], int(sys.argv[2])
over = {"num_iterations": 100000, "epoch_length": 1000, **(json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})}
work = Path(os.environ.get("WORK", "/tmp/overhead_breakdown"))
p = bundle_parser(method, overrides=over, work_dir=work / "bundle", size=size, batch=8)
trainer = p.get_parsed_content("train#trainer")
acc: dict[str, float] = collections.defaultdict(float)


def wrap(obj, name, key):
    f = getattr(obj, name)

    @functools.wraps(f)
    def timed(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        acc[key] += time.perf_counter() - t
        return r

    setattr(obj, name, timed)


wrap(trainer, "prepare_batch", "prepare-batch")
wrap(trainer, "inferer", "forward")
wrap(trainer, "loss_function", "loss")
wrap(trainer.optimizer, "step", "optimizer step")
wrap(trainer.optimizer, "zero_grad", "zero-grad")
backward = torch.Tensor.backward


def timed_backward(self, *a, **k):
    t = time.perf_counter()
    r = backward(self, *a, **k)
    acc["backward"] += time.perf_counter() - t
    return r


torch.Tensor.backward = timed_backward
attach = [p.get_parsed_content("train#resume_handler"), p.get_parsed_content("train#checkpoint_saver")]
ours = TrainerBlocks(trainer, 20, attach=attach)
plain = PlainLoop(bundle_parser(method, overrides=over, work_dir=work / "plain", size=size, batch=8), 20, method,
                  same_algorithm=True)  # fmt: skip
ours(), plain()  # warm-up
acc.clear()
t_ours = t_plain = plain_backward = 0.0
for _ in range(6):
    t = time.perf_counter()
    ours()
    t_ours += time.perf_counter() - t
    before = acc["backward"]
    t = time.perf_counter()
    plain()
    t_plain += time.perf_counter() - t
    plain_backward += acc["backward"] - before
    acc["backward"] = before
n = 120
print(f"bundle {t_ours / n * 1e3:.2f} ms/it, plain (same algorithm) {t_plain / n * 1e3:.2f} ms/it, "
      f"ratio {t_plain / t_ours:.3f}")  # fmt: skip
for k, v in acc.items():
    print(f"  bundle {k}: {v / n * 1e3:.2f} ms")
print(f"  plain backward: {plain_backward / n * 1e3:.2f} ms")
ours.close()

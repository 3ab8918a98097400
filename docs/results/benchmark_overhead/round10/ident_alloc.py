# the same 12 iterations with and without the allocator tuning, each in a fresh process: weights compared bit for bit
import pathlib, subprocess, sys
SCRIPTS = str(pathlib.Path(__file__).resolve().parents[4] / "scripts")
code = r'''
import sys, torch, hashlib
sys.path.insert(0, sys.argv[-1])  # the repository's scripts/
torch.set_num_threads(1)
from bench.bundle_setup import bundle_parser, TrainerBlocks
m, tune = sys.argv[1], sys.argv[2] == "1"
p = bundle_parser(m, overrides={"num_iterations": 100000, "epoch_length": 1000, "cpu_allocator_tuning": tune}, work_dir=f"/tmp/ida_{m}_{tune}", size=32, batch=8)
tr = p.get_parsed_content("train#trainer")
tb = TrainerBlocks(tr, 12); tb(); tb.close()
h = hashlib.sha256()
for q in list(p.get_parsed_content("network").parameters()) + list(p.get_parsed_content("ema").ema_model.parameters()):
    h.update(q.detach().numpy().tobytes())
print("HASH", h.hexdigest())
'''
for m in ["seg_guided_diffusion", "siamese_diffusion", "meddiff_ft"]:
    hs = []
    for tune in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, m, tune, SCRIPTS], capture_output=True, text=True)
        hs.append([l for l in out.stdout.splitlines() if l.startswith("HASH")][-1])
    print(m, "allocator tuned vs default, 12 iterations, weights + EMA bit-identical:", hs[0] == hs[1], hs[0][5:17])

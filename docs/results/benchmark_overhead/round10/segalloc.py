# segmentation bundle (demo.json: 128 x 128, batch 8), 40 training iterations after 10 warm-up, tuned vs default,
# each in a fresh process, alternated twice; default torch threads (2)
import pathlib, subprocess, sys
SCRIPTS = str(pathlib.Path(__file__).resolve().parents[4] / "scripts")
code = r'''
import sys, time, torch
sys.path.insert(0, sys.argv[-1])  # the repository's scripts/
from bench.bundle_setup import bundle_parser, TrainerBlocks
tune = sys.argv[1] == "1"
p = bundle_parser("segmentation", overrides={"num_iterations": 100000, "epoch_length": 1000, "val_interval": 100000, "cpu_allocator_tuning": tune}, work_dir=f"/tmp/segalloc_{tune}")
tr = p.get_parsed_content("train#trainer")
tb = TrainerBlocks(tr, 10); tb()
bs = [tb() for _ in range(4)]; tb.close()
print("RES", f"{sum(b.wall_s for b in bs) / 40 * 1e3:.1f} ms/it wall, {sum(b.cpu_s for b in bs) / 40 * 1e3:.1f} CPU-ms/it")
'''
for r in range(2):
    for tune in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, tune, SCRIPTS], capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RES")]
        print("tuned" if tune == "1" else "default", lines[-1] if lines else out.stderr[-2000:])

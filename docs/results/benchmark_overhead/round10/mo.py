import sys, time, os, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "scripts"))
if sys.argv[1] == "tuned":  # mmap threshold 32 MiB, trim threshold TRIM_MB (256 unless set)
    from monai_siamese.engines import tune_cpu_allocator
    print("tuned", tune_cpu_allocator(32, int(os.environ.get("TRIM_MB", "256"))))
size, threads = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from bench.bundle_setup import bundle_parser, first_batch
p = bundle_parser("seg_guided_diffusion", overrides={"num_iterations": 100000}, work_dir="/tmp/mo", size=size, batch=8)
net = p.get_parsed_content("network"); net.train()
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
b = first_batch(p, "cpu")
x = torch.cat([b["image"], b["cond"]], 1); t = torch.randint(0, 1000, (8,))
def it():
    opt.zero_grad(set_to_none=True)
    pred = net(x, timesteps=t); loss = pred.square().mean(); loss.backward(); opt.step()
for _ in range(5): it()
s = time.perf_counter(); c = time.process_time()
n = 40 if size <= 32 else 12
for _ in range(n): it()
print(sys.argv[1:], f"{(time.perf_counter()-s)/n*1e3:.1f} ms/it wall, {(time.process_time()-c)/n*1e3:.1f} CPU-ms/it, maxrss {__import__('resource').getrusage(0).ru_maxrss/1024:.0f} MB")

import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "scripts"))
torch.set_num_threads(1)
from bench.bundle_setup import bundle_parser, first_batch
p = bundle_parser("seg_guided_diffusion", overrides={"num_iterations": 100000}, work_dir="/tmp/free2", size=32, batch=8)
net = p.get_parsed_content("network"); net.train()
b = first_batch(p, "cpu")
x = torch.cat([b["image"], b["cond"]], 1); t = torch.randint(0, 1000, (8,))
tot = {"free": 0.0, "fb": 0.0}
for i in range(60):
    s = time.perf_counter()
    pred = net(x, timesteps=t)
    loss = pred.square().mean(); loss.backward()
    m = time.perf_counter()
    del pred, loss
    e = time.perf_counter()
    if i >= 10: tot["free"] += e - m; tot["fb"] += m - s
print({k: round(v / 50 * 1e3, 3) for k, v in tot.items()})
# free after set grads None (plain)
for q in net.parameters(): q.grad = None
tot = {"free": 0.0}
for i in range(60):
    for q in net.parameters(): q.grad = None
    pred = net(x, timesteps=t); loss = pred.square().mean(); loss.backward()
    m = time.perf_counter(); del pred, loss; e = time.perf_counter()
    if i >= 10: tot["free"] += e - m
print("set_to_none each it", round(tot["free"] / 50 * 1e3, 3))

import sys, json, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "scripts"))
torch.set_num_threads(1)
from bench.bundle_setup import bundle_parser
method = sys.argv[1]
p = bundle_parser(method, overrides={"num_iterations": 800}, work_dir=f"/tmp/clipfreq_{method}", size=64, batch=8)
tr = p.get_parsed_content("train#trainer")
norms = []
from ignite.engine import Events
tr.add_event_handler(Events.ITERATION_COMPLETED, lambda e: norms.append(float(e.state.grad_norm)))
tr.run()
q = [sum(n > 1.0 for n in norms[i:i+100]) for i in range(0, len(norms), 100)]
print(method, "clipped per 100 iterations:", q, "total", sum(n > 1 for n in norms), len(norms))
json.dump(norms, open(f"clipfreq_{method}.json", "w"))

import sys, torch, time
sys.path.insert(0, "/tmp/wt17")
from skdeepcluster.augment import StrongImageAugment
torch.manual_seed(0)
x = torch.rand(256, 1, 28, 28)
aug = StrongImageAugment()
choice = torch.randint(len(aug._OPS), (256,)); m = torch.rand(256) - 0.5
new = aug._apply_chosen(x, choice, m)
old = x.clone()
for k, name in enumerate(aug._OPS):
    rows = (choice == k).nonzero().squeeze(1)
    if name != "identity" and rows.numel() > 0:
        old[rows] = aug._apply(name, x[rows], m[rows])
print("max diff", (new - old).abs().max().item())
torch.set_num_threads(1)
for f, label in [(lambda: aug._apply_chosen(x, choice, m), "new")]:
    t = time.perf_counter(); [f() for _ in range(20)]; print(label, (time.perf_counter() - t) / 20 * 1000, "ms")
def oldf():
    out = x.clone()
    for k, name in enumerate(aug._OPS):
        rows = (choice == k).nonzero().squeeze(1)
        if name != "identity" and rows.numel() > 0:
            out[rows] = aug._apply(name, x[rows], m[rows])
    return out
t = time.perf_counter(); [oldf() for _ in range(20)]; print("old", (time.perf_counter() - t) / 20 * 1000, "ms")

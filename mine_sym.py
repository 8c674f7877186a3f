import sys, time, torch
sys.path.insert(0, "/tmp/wt17")
from skdeepcluster._numerics import unit_rows

@torch.no_grad()
def mine_symmetric(features, k, block=1024):
    n = features.shape[0]
    unit = unit_rows(features.float())
    dev = features.device
    best_v = torch.full((n, k), float("-inf"), device=dev)
    best_i = torch.zeros((n, k), dtype=torch.long, device=dev)
    starts = list(range(0, n, block))
    def merge(r0, r1, vals, idx):
        cv = torch.cat([best_v[r0:r1], vals], 1); ci = torch.cat([best_i[r0:r1], idx], 1)
        top = cv.topk(k, dim=1)
        best_v[r0:r1] = top.values; best_i[r0:r1] = ci.gather(1, top.indices)
    for a, i0 in enumerate(starts):
        i1 = min(i0 + block, n)
        for j0 in starts[a:]:
            j1 = min(j0 + block, n)
            s = unit[i0:i1] @ unit[j0:j1].T
            if j0 == i0:
                r = torch.arange(i1 - i0, device=dev); s[r, r] = float("-inf")
            kk = min(k, j1 - j0)
            t = s.topk(kk, dim=1); merge(i0, i1, t.values, t.indices + j0)
            if j0 != i0:
                kk = min(k, i1 - i0)
                t = s.topk(kk, dim=0); merge(j0, j1, t.values.T, t.indices.T + i0)
    return best_i

if __name__ == "__main__":
    from skdeepcluster.neighbors import mine_neighbors
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    n, d = int(sys.argv[1]), int(sys.argv[2])
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    for blk in (1024, 2048):
        t = time.perf_counter(); a = mine_symmetric(x, 20, blk); ta = time.perf_counter() - t
        print("sym", blk, round(ta, 2))
    t = time.perf_counter(); b = mine_neighbors(x, 20); tb = time.perf_counter() - t
    print("old", round(tb, 2))
    exact = (unit_rows(x.double()) @ unit_rows(x.double()).T).fill_diagonal_(-2).topk(20, 1).indices
    rec = lambda m: torch.tensor([len(set(m[i].tolist()) & set(exact[i].tolist())) for i in range(n)]).float().mean().item() / 20
    print("recall sym", rec(a), "old", rec(b))

import sys, numpy as np, torch
sys.path.insert(0, "/tmp/wt17")
import skdeepcluster as sk
from skdeepcluster._sync_count import counting_syncs, SteadyStateSyncs
from sklearn.datasets import load_digits
torch.set_num_threads(1)
for n, b in [(256, 16), (512, 16), (1024, 32)]:
    X = load_digits().data[:n].astype(np.float32)
    with counting_syncs() as counter:
        sk.SeLa(n_clusters=4, pretext=None, max_epochs=4, batch_size=b, random_state=0, callbacks=[SteadyStateSyncs(counter)]).fit(X)
    print(n, b, counter.steps, round(counter.per_step, 2), dict(counter.calls))

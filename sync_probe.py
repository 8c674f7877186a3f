import sys, numpy as np, torch
sys.path.insert(0, "/tmp/wt17")
import skdeepcluster as sk
from skdeepcluster._sync_count import counting_syncs, SteadyStateSyncs
from sklearn.datasets import load_digits
torch.set_num_threads(1)
X = load_digits().data[:256].astype(np.float32)
img = (X * 255 / 16).round().astype(np.uint8).reshape(-1, 1, 8, 8)
def make(name, cb):
    c = dict(batch_size=64, random_state=0, callbacks=[cb])
    return {
        "SimCLR": (sk.SimCLR(max_epochs=3, **c), img),
        "RotNet": (sk.RotNet(max_epochs=3, **c), img),
        "AutoEncoder": (sk.AutoEncoder(max_epochs=3, **c), X),
        "SCAN": (sk.SCAN(n_clusters=5, pretext=None, max_epochs=3, self_label_epochs=3, **c), X),
        "SCAN-img": (sk.SCAN(n_clusters=5, pretext=sk.SimCLR(max_epochs=1, batch_size=64), max_epochs=3, self_label_epochs=3, **c), img),
        "SeLa": (sk.SeLa(n_clusters=5, pretext=None, max_epochs=4, **c), X),
        "LSDC": (sk.LSDC(n_clusters=5, pretext=None, max_epochs=3, **c), X),
        "C2BIN": (sk.C2BIN(n_clusters=5, max_epochs=3, **c), X),
        "DRC": (sk.DRC(n_clusters=5, max_epochs=3, **c), X),
    }[name]
for name in sys.argv[1:]:
    with counting_syncs() as counter:
        cb = SteadyStateSyncs(counter)
        est, data = make(name, cb)
        # the callbacks are deep-copied per stage: share the counter through the class
        est.fit(data)
    print(name, "steps", counter.steps, "per step", round(counter.per_step, 1), dict(counter.calls))

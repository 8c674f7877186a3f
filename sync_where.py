import sys, traceback, collections, numpy as np, torch
sys.path.insert(0, "/tmp/wt17")
import skdeepcluster as sk
from sklearn.datasets import load_digits
torch.set_num_threads(1)
X = load_digits().data[:256].astype(np.float32)
img = (X * 255 / 16).round().astype(np.uint8).reshape(-1, 1, 8, 8)
where = collections.Counter()
names = ["item", "tolist", "__bool__", "__float__", "__int__", "nonzero", "cpu", "numpy"]
orig = {n: getattr(torch.Tensor, n) for n in names}
active = [False]
def wrap(n, o):
    def w(self, *a, **k):
        if active[0]:
            st = traceback.extract_stack(limit=6)[:-1]
            frames = [f"{f.filename.split('site-packages/')[-1].split('wt17/')[-1]}:{f.lineno}" for f in st[-3:]]
            where[(n, " <- ".join(reversed(frames)))] += 1
        return o(self, *a, **k)
    return w
for n, o in orig.items(): setattr(torch.Tensor, n, wrap(n, o))
from skorch.callbacks import Callback
class On(Callback):
    def on_epoch_begin(self, net, **kw): active[0] = len(net.history) >= 2
    def on_train_end(self, net, **kw): active[0] = False
name = sys.argv[1]
c = dict(batch_size=64, random_state=0, callbacks=[On()])
est, data = {"SimCLR": (sk.SimCLR(max_epochs=3, **c), img), "SeLa": (sk.SeLa(n_clusters=5, pretext=None, max_epochs=4, **c), X),
  "SCAN": (sk.SCAN(n_clusters=5, pretext=None, max_epochs=3, self_label_epochs=3, **c), X), "LSDC": (sk.LSDC(n_clusters=5, pretext=None, max_epochs=3, **c), X)}[name]
est.fit(data)
for k, v in where.most_common(12): print(v, k)

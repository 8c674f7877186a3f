"""Shared test configuration: one torch thread (CI machines are small) and quick hypothesis runs.

Hypothesis profiles (tests with their own ``settings`` keep them):

- ``dev`` (default): no deadline (torch calls vary in time), 25 examples, random examples;
- ``ci`` (when the ``CI`` environment variable is set): the same, derandomized, so a CI run is
  repeatable. ``HYPOTHESIS_PROFILE=...`` picks one explicitly.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

_QUICK = dict(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", **_QUICK)
settings.register_profile("ci", derandomize=True, **_QUICK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def one_epoch_pretexts(monkeypatch):
    """The named pretexts ("simclr", "rotnet") train one epoch; everything else as named."""
    from skdeepcluster import pretext

    for name, cls in list(pretext.NAMED_PRETEXTS.items()):
        monkeypatch.setitem(
            pretext.NAMED_PRETEXTS, name, lambda cls=cls, **kw: cls(**{"max_epochs": 1, **kw})
        )

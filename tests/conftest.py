"""Shared test configuration: few threads (the CI machine is small) and quick hypothesis runs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(1)

# Torch calls are slow to start and vary in time: no deadline, few examples.
settings.register_profile(
    "torch", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("torch")

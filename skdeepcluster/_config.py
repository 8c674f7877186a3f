"""Package-wide settings, as scikit-learn's ``set_config`` / ``config_context``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from numbers import Integral
from typing import Any

_config: dict[str, Any] = {"device_data_bytes": None, "bf16": False, "channels_last": True}


def get_config() -> dict[str, Any]:
    """The current settings (a copy); see :func:`set_config`."""
    return dict(_config)


def set_config(
    device_data_bytes: int | str | None = "keep",
    bf16: bool | str = "keep",
    channels_last: bool | str = "keep",
) -> None:
    """Set package-wide settings.

    Parameters
    ----------
    device_data_bytes : int or None
        The most bytes of training data a fit keeps on its device. Data that fits (``X`` as
        stored: uint8 images stay uint8, everything else float32) lives on the device for the
        whole fit, the fast path; larger data stays in host memory (a NumPy memmap stays on
        disk) and every batch is copied to the device, through pinned memory with a
        non-blocking copy on CUDA, then augmented there. None (the default): on CUDA, half of
        the device's free memory; on the CPU, no limit (the device is host memory, and a memmap
        is read in place without a copy).
    bf16 : {"auto", True, False}
        Training under bfloat16 autocast. On CUDA it is on unless False. On the CPU, True turns
        it on, and "auto" turns it on where the CPU has bfloat16 instructions (AMX or
        AVX-512 BF16). False (the default) keeps CPU training in float32 until bfloat16 is
        measured not to lower the accuracy of the methods (``docs/benchmarks.md``).
    channels_last : bool
        Train and run convolutional networks in the channels-last memory format (True, the
        default), which the CPU's oneDNN and CUDA's tensor cores convolve faster: on a 2-core
        AVX-512 CPU the float32 steps of the convolutional stages are 1.0-2.0x faster and SCAN's
        MNIST-test fit takes 0.81x the time, with the same accuracy (``docs/benchmarks.md``).
        False keeps PyTorch's default layout. Only the layout changes, not the values.
    """
    if device_data_bytes != "keep":
        if device_data_bytes is not None and (
            not isinstance(device_data_bytes, Integral) or device_data_bytes < 0
        ):
            raise ValueError(
                "device_data_bytes must be a non-negative integer (bytes) or None (automatic), "
                f"got {device_data_bytes!r}"
            )
        _config["device_data_bytes"] = device_data_bytes
    if bf16 != "keep":
        if not (bf16 is True or bf16 is False or bf16 == "auto"):
            raise ValueError(f'bf16 must be True, False or "auto", got {bf16!r}')
        _config["bf16"] = bf16
    if channels_last != "keep":
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
        _config["channels_last"] = channels_last


@contextlib.contextmanager
def config_context(**settings: Any) -> Iterator[None]:
    """Within the block, the settings of :func:`set_config` given here; restored after."""
    saved = get_config()
    set_config(**settings)
    try:
        yield
    finally:
        _config.update(saved)

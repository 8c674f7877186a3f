"""The ground floor: checks of scalars and tensors, used by every other module.

It imports only numpy and torch, so the pure tensor functions (``losses``, ``ot``,
``pairwise_labels``, ``mixing``) stand on it without pulling in the estimator machinery. Each
check raises a ``ValueError`` that names the argument, what was given and what is accepted.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Iterator
from typing import Any

from torch import Tensor


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, else a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: Any, name: str) -> float:
    """``value`` (a real number or a one-element tensor) as a finite Python float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a real number; got a tensor of shape {tuple(value.shape)}."
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}.")
    return value


def check_number(
    value: Any,
    name: str,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (an end is excluded when it is ``open``)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {left}{low}, {high}{right}, got {value!r}")
    return float(value)


def check_float_matrix(
    t: Any, name: str, shape: str, per_row: str, min_rows: int = 1, hint: str = ""
) -> None:
    """ValueError unless ``t`` is a 2-D floating tensor with ``>= min_rows`` rows and a column.

    ``shape`` (e.g. ``"(N, K)"``) and ``per_row`` (what a row holds) go into the messages.
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}; got {type(t).__name__}.")
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor of shape {shape} ({per_row}); "
            f"got shape {tuple(t.shape)}.{hint}"
        )
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype; got {t.dtype}.")
    if t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least {min_rows} row(s) and one column; "
            f"got shape {tuple(t.shape)}."
        )


def check_same_shape(a: Tensor, b: Tensor, names: str, shape: str = "(N, K)") -> None:
    """ValueError unless ``a`` and ``b`` are 2-D tensors of one shape (``names``: "a and b")."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"{names} must both be {shape} of the same shape; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


_value_checks: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "skdeepcluster_value_checks", default=True
)


def checking_values() -> bool:
    """Whether the pure functions check the *values* of their tensor arguments (indices in
    range, weights summing to one...): each such check reads a value on the host, a device sync
    on a GPU. True, but inside :func:`values_trusted`."""
    return _value_checks.get()


@contextlib.contextmanager
def values_trusted() -> Iterator[None]:
    """Within the block the pure functions skip their value checks (shape and dtype checks
    stay): the training step wraps its objective in it, since the values it passes are made by
    the package itself and a check per step would stall a GPU."""
    token = _value_checks.set(False)
    try:
        yield
    finally:
        _value_checks.reset(token)

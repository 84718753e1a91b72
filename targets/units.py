"""Quantities with units as topology files write them: ``100Mbps``, ``5ms``, ``236GFLOPS``, ``4GB``.

>>> bits_per_second("1.5Mbps"), seconds("250ms"), seconds(0.01)
(1500000.0, 0.25, 0.01)
>>> quantity("25.6GB/s"), quantity("236GFLOPS"), quantity(4e9)
(25600000000.0, 236000000000.0, 4000000000.0)
"""

from __future__ import annotations

import math
import re

_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_NUMBER = r"(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*"
_RATE = re.compile(_NUMBER + r"([kKMGT]?)(bps|bit/s|B/s|Bps)$")
_TIME = re.compile(_NUMBER + r"(s|ms|us|µs|ns|min)$")
_QUANTITY = re.compile(_NUMBER + r"([kKMGTP]?)(FLOPS|FLOP/s|B/s|B|Hz|W)?$")
_TIME_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0}


def _finite(number: float, value) -> float:
    """``number`` unless it is NaN or infinite (``1e999Gbps`` overflows to inf, YAML has ``.nan`` and ``.inf``)."""
    if not math.isfinite(number):
        raise ValueError(f"'{value}' is not a finite number")
    return number


def bits_per_second(value: str | float) -> float:
    """A data rate in bits per second: ``100Mbps``, ``1Gbps``, ``20MB/s`` (bytes), or a number (bps)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), value)
    match = _RATE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a data rate such as 100Mbps, 1Gbps or 20MB/s")
    number, prefix, unit = match.groups()
    return _finite(float(number) * _PREFIX[prefix] * (8.0 if unit in ("B/s", "Bps") else 1.0), value)


def seconds(value: str | float) -> float:
    """A duration in seconds: ``5ms``, ``200us``, ``1.5s``, or a number (seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), value)
    match = _TIME.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a duration such as 5ms, 200us or 1s")
    return _finite(float(match.group(1)) * _TIME_SCALE[match.group(2)], value)


def quantity(value: str | float) -> float:
    """A plain figure with an SI prefix and an optional unit: ``236GFLOPS``, ``4GB``, ``25.6GB/s``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), value)
    match = _QUANTITY.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a number such as 236GFLOPS, 4GB or 25.6GB/s")
    return _finite(float(match.group(1)) * _PREFIX[match.group(2)], value)

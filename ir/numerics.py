"""Numerical equivalence (design.md): max abs error <= 1e-4 * max(1, max abs of the reference), float32.

The one comparison every verification uses, from the reference executor to an ONNX part checked for TensorRT.
"""

from __future__ import annotations

import torch

RELATIVE_TOLERANCE = 1e-4


def max_error(result, reference) -> tuple[float, float]:
    """(max abs error, allowed error) over matching tensors of two outputs.

    Equal values count as no error, infinities included (a max pool whose window lies wholly in the
    padding gives -inf, and a conv over it NaN): the split model reproduces the model's value. A NaN
    on one side only is an infinite error. The scale of the
    tolerance comes from the finite reference values.

    >>> max_error(torch.tensor([1.0, -float("inf")]), torch.tensor([1.00001, -float("inf")]))[0] < 1e-4
    True
    """
    pairs = list(zip(_flat(result), _flat(reference)))
    error = max(float(torch.where((a == b) | (a.isnan() & b.isnan()), 0.0, (a - b).abs())
                      .nan_to_num(nan=float("inf")).max()) for a, b in pairs)
    scale = max(float(b[torch.isfinite(b)].abs().max()) if torch.isfinite(b).any() else 0.0 for _, b in pairs)
    return error, RELATIVE_TOLERANCE * max(1.0, scale)


def _flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flat(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flat(item)]
    return []

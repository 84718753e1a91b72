"""Small nn.Modules the tests build models from, for ops torch has only as functions."""

import torch.nn.functional as F
from torch import nn


class Interpolate(nn.Module):
    """``F.interpolate`` by ``size`` or ``scale``, in any mode, with or without ``align_corners``."""

    def __init__(self, size, scale, mode, align_corners):
        super().__init__()
        self.size, self.scale, self.mode, self.align_corners = size, scale, mode, align_corners

    def forward(self, x):
        return F.interpolate(x, size=self.size, scale_factor=self.scale, mode=self.mode,
                             align_corners=self.align_corners)

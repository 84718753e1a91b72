"""A detector neck as detection users write them: a small backbone, a feature pyramid and a shared head.

Backbone stages of conv -> BatchNorm -> Hardswish (the last with a GELU); an FPN
whose top-down path upsamples by nearest interpolation and adds the lateral 1x1
projections; every pyramid level goes through one shared 3x3 head, and the
levels' flattened predictions are concatenated (anchors x outputs), as a
single-shot detector does.

>>> import torch
>>> fpn_detector()(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 336, 6])
"""

import torch
from torch import nn
from torch.nn import functional as F


def stage(cin: int, cout: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), act,
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), act)


class FPNDetector(nn.Module):
    def __init__(self, width: int = 16, outputs: int = 6):
        super().__init__()
        self.outputs = outputs
        self.c2 = stage(3, width, nn.Hardswish())
        self.c3 = stage(width, 2 * width, nn.Hardswish())
        self.c4 = stage(2 * width, 4 * width, nn.Hardswish())
        self.c5 = stage(4 * width, 8 * width, nn.GELU())
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (2 * width, 4 * width, 8 * width))
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, outputs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.c3(self.c2(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, scale_factor=2, mode="nearest")
        p3 = self.lateral[0](c3) + F.interpolate(p4, scale_factor=2, mode="nearest")
        levels = [self.head(F.relu(self.smooth(p))) for p in (p3, p4, p5)]
        return torch.cat([level.flatten(2).transpose(1, 2) for level in levels], dim=1)


def fpn_detector() -> nn.Module:
    return FPNDetector()

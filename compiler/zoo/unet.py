"""A small U-Net as segmentation users write them: what the papers' models lack.

Encoder blocks of conv -> GroupNorm -> SiLU with a squeeze-excitation gate, max-pool
down; a decoder that goes up once by ConvTranspose2d and once by bilinear
interpolation, concatenating the encoder's skip tensor each time; a 1x1 head.

>>> import torch
>>> unet()(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 4, 64, 64])
"""

import torch
from torch import nn
from torch.nn import functional as F


class SqueezeExcite(nn.Module):
    """Global average pool -> two 1x1 convs -> sigmoid, multiplied back onto the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


def block(cin: int, cout: int, groups: int = 4) -> nn.Sequential:
    """Two conv -> GroupNorm -> SiLU layers."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 4, width: int = 16):
        super().__init__()
        self.enc1 = block(in_channels, width)
        self.enc2 = nn.Sequential(block(width, 2 * width), SqueezeExcite(2 * width))
        self.bottom = block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.dec1 = block(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(F.max_pool2d(s1, 2))
        y = self.bottom(F.max_pool2d(s2, 2))
        y = self.dec2(torch.cat([self.up2(y), s2], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.dec1(torch.cat([y, s1], dim=1))
        return self.head(y)


def unet() -> nn.Module:
    return UNet()

"""YOLOv2 with the layer structure of darknet's ``cfg/yolov2.cfg`` (COCO, 608x608).

23 conv layers (batch-normalised, leaky ReLU 0.1) and 5 max-pools form the
Darknet-19 trunk; layer 16's output (512 x 38 x 38) takes the passthrough
route: a 1x1 conv to 64 channels, a stride-2 reorg (space-to-depth, 64 -> 256
channels at 19x19), concatenated with the trunk's 1024 channels, then a 3x3
conv and the final 1x1 conv to 5 * (80 + 5) = 425 channels.

The reorg is written as ``F.pixel_unshuffle``. Darknet's own reorg orders the
output channels differently; with the same weights permuted the two agree, and
the spatial footprint (what halos and costs depend on) is identical.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _conv(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1),
    )


def _trunk(c_in: int, spec: list) -> tuple[nn.Sequential, int]:
    layers = []
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            c_out, k = item
            layers.append(_conv(c_in, c_out, k))
            c_in = c_out
    return nn.Sequential(*layers), c_in


class YOLOv2(nn.Module):
    """YOLOv2-608 (COCO): 80 classes, 5 anchors, output 425 x 19 x 19.

    >>> YOLOv2()(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 425, 2, 2])
    """

    def __init__(self, num_classes: int = 80, num_anchors: int = 5):
        super().__init__()
        self.stage1, c16 = _trunk(3, [
            (32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M",
            (256, 3), (128, 1), (256, 3), "M",
            (512, 3), (256, 1), (512, 3), (256, 1), (512, 3),
        ])
        self.stage2, c24 = _trunk(c16, [
            "M", (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
            (1024, 3), (1024, 3),
        ])
        self.passthrough = _conv(c16, 64, 1)
        self.head = _conv(c24 + 64 * 4, 1024, 3)
        self.detect = nn.Conv2d(1024, num_anchors * (num_classes + 5), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.stage1(x)
        coarse = self.stage2(fine)
        reorg = F.pixel_unshuffle(self.passthrough(fine), 2)
        return self.detect(self.head(torch.cat([reorg, coarse], dim=1)))


def yolov2(num_classes: int = 80) -> nn.Module:
    """YOLOv2 as in darknet's yolov2.cfg."""
    return YOLOv2(num_classes)

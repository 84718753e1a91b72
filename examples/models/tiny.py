"""A small model given as ``file.py:factory``: ``halocut inspect examples/models/tiny.py:build``."""

import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 3, 64, 64)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = x + self.conv2(x).relu()
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def build() -> nn.Module:
    return Tiny()

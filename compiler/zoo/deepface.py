"""A DeepFace-like network (Taigman et al., CVPR 2014, Fig. 2; DeePar's third model, paper 000 Sec. V).

DeepFace's layer list on its 152x152x3 aligned face: C1 32 filters 11x11 ->
142x142x32, M2 max-pool 3x3 stride 2 -> 71x71x32, C3 16 filters 9x9 ->
63x63x16, L4 16 filters 9x9 -> 55x55x16, L5 16 filters 7x7 stride 2 ->
25x25x16, L6 16 filters 5x5 -> 21x21x16, F7 4096 units, F8 4030 units (the
identities of its training set), ReLU after every layer but F8. L4-L6 are
locally connected (no weight sharing) in the original; halocut has no such op
kind, so they are plain convolutions here: the same shapes, the same FLOPs per
output and the same output bytes, which is what the partitioning and the cost
model see; only their parameter bytes are smaller (DeePar's Fig. 3 is about
delays, not memory).
"""

from torch import nn


def deepface(num_classes: int = 4030, in_channels: int = 3) -> nn.Module:
    """The DeepFace-like stack above.

    >>> import torch
    >>> deepface()(torch.zeros(1, 3, 152, 152)).shape
    torch.Size([1, 4030])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=11), nn.ReLU(),  # C1
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # M2: 142 -> 71 (the paper's size needs ceil mode)
        nn.Conv2d(32, 16, kernel_size=9), nn.ReLU(),  # C3
        nn.Conv2d(16, 16, kernel_size=9), nn.ReLU(),  # L4
        nn.Conv2d(16, 16, kernel_size=7, stride=2), nn.ReLU(),  # L5
        nn.Conv2d(16, 16, kernel_size=5), nn.ReLU(),  # L6
        nn.Flatten(),
        nn.Linear(21 * 21 * 16, 4096), nn.ReLU(),  # F7
        nn.Linear(4096, num_classes),  # F8
    )

"""LeNet-5 as HierTrain trains it (paper 002, section V: CIFAR-10, so 3x32x32 input, 10 classes)."""

from torch import nn


def lenet5(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """LeNet-5: two 5x5 conv + 2x2 max-pool stages, then FC 120-84-classes.

    >>> import torch
    >>> lenet5()(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )

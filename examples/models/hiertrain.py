"""Models for HierTrain's training runs (paper 002), given as ``file.py:factory``.

- ``vgg_small``: a small VGG-like net with batch norm, 3x32x32 (CIFAR-10 sized), 10 classes: what the
  equivalence tests train besides LeNet-5 (``halocut train`` runs batch norm in eval mode: running
  statistics frozen, weight and bias trained);
- ``alexnet_tiny``: torchvision's AlexNet with 200 classes at 3x64x64, the Tiny ImageNet setting of Sec. VI-A.

``halocut train-plan examples/models/hiertrain.py:vgg_small --topology examples/topologies/hiertrain-1core.yaml --batch 16``
"""

import torchvision
from torch import nn

INPUT_SHAPE = (1, 3, 32, 32)


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


def vgg_small(num_classes: int = 10) -> nn.Module:
    """Three conv-BN-ReLU-pool blocks (8, 16, 32 channels), then FC 512-64-classes."""
    model = nn.Sequential(*_block(3, 8), *_block(8, 16), *_block(16, 32), nn.Flatten(),
                          nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))
    model.input_shape = INPUT_SHAPE
    return model


def alexnet_tiny(num_classes: int = 200) -> nn.Module:
    """AlexNet (torchvision's layers) for Tiny ImageNet: 64x64 inputs, 200 classes."""
    model = torchvision.models.alexnet(num_classes=num_classes)
    model.input_shape = (1, 3, 64, 64)
    return model

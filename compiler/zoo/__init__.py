"""Models torchvision lacks, found by name by the front end: the papers' own, and a U-Net and a detector neck
as users write them (bilinear and nearest upsampling, ConvTranspose2d, skip concats, GroupNorm, SE blocks), and a
super-resolution net (pixel shuffle, bicubic, ConvTranspose2d, bilinear by size).

Each entry maps a name to ``(factory, default input shape)``.
"""

from halocut.compiler.zoo.deepface import deepface
from halocut.compiler.zoo.fpn import fpn_detector
from halocut.compiler.zoo.lenet5 import lenet5
from halocut.compiler.zoo.srnet import srnet
from halocut.compiler.zoo.unet import unet
from halocut.compiler.zoo.yolov2 import yolov2

ZOO = {
    "yolov2": (yolov2, (1, 3, 608, 608)),
    "lenet5": (lenet5, (1, 3, 32, 32)),
    "deepface": (deepface, (1, 3, 152, 152)),
    "unet": (unet, (1, 3, 64, 64)),
    "fpn_detector": (fpn_detector, (1, 3, 64, 64)),
    "srnet": (srnet, (1, 3, 32, 32)),
}

"""Models the papers use that torchvision lacks, found by name by the front end.

Each entry maps a name to ``(factory, default input shape)``.
"""

from halocut.compiler.zoo.deepface import deepface
from halocut.compiler.zoo.lenet5 import lenet5
from halocut.compiler.zoo.yolov2 import yolov2

ZOO = {
    "yolov2": (yolov2, (1, 3, 608, 608)),
    "lenet5": (lenet5, (1, 3, 32, 32)),
    "deepface": (deepface, (1, 3, 152, 152)),
}

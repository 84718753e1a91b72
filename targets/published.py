"""Published whole-model latencies (batch 1, FP32) from ../shared/data/device-figures.md.

The cost model is calibrated against these and a test checks it lands within
a factor of 1.5 of each (``benchmarks/calibrate_cost.py`` prints the table).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    kind: str  # catalog kind
    model: str
    input_size: int
    latency_s: float
    source: str


NCNN = "Tencent/ncnn benchmark/README.md"
TRT_256 = "kentaroy47/benchmark-FP32-FP16-INT8-with-TensorRT (256x256)"
TRT_TX2 = "NVIDIA-AI-IOT/tf_to_trt_image_classification (TensorRT, with copies)"

PUBLISHED = (
    Published("rpi4", "squeezenet1_1", 224, 46.7e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi4", "mobilenet_v2", 224, 61.9e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi4", "alexnet", 224, 76.4e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi4", "resnet18", 224, 123.1e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi4", "resnet50", 224, 262.8e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi4", "vgg16", 224, 547.1e-3, f"{NCNN}, RPi 4 1.8 GHz, 4 threads"),
    Published("rpi3b", "squeezenet1_1", 224, 85.2e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("rpi3b", "mobilenet_v2", 224, 111.7e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("rpi3b", "alexnet", 224, 159.1e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("rpi3b", "resnet18", 224, 271.9e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("rpi3b", "resnet50", 224, 587.4e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("rpi3b", "vgg16", 224, 1902e-3, f"{NCNN}, RPi 3B+, 4 threads"),
    Published("jetson-nano", "resnet18", 256, 26e-3, TRT_256),
    Published("jetson-nano", "resnet50", 256, 79e-3, TRT_256),
    Published("jetson-tx2", "resnet50", 224, 27.1e-3, TRT_TX2),
    Published("jetson-tx2", "vgg16", 224, 79.2e-3, TRT_TX2),
    Published("jetson-agx-xavier", "resnet50", 256, 9.9e-3, TRT_256),
    Published("tesla-v100", "resnet50", 224, 2.68e-3, "gist 1duo/efd3be1dc8eb2c45863b75f20a76f8b2 (TensorRT 4)"),
)

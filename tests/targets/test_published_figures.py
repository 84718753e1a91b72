"""Totals of `halocut inspect` against published FLOP and parameter counts (within 1 %)."""

import pytest

from halocut.compiler.inspection import inspect_model

# (model, GFLOPs, M params); ../shared/data/device-figures.md, FLOPs = 2 x MACs.
PUBLISHED = [
    ("vgg16", 30.9, 138.36),
    ("vgg19", 39.3, 143.67),
    ("resnet50", 8.18, 25.56),
    ("resnet18", 3.63, 11.69),
    ("mobilenet_v2", 0.60, 3.50),
    ("alexnet", 1.43, 61.1),
    ("squeezenet1_1", 0.70, 1.24),
]


@pytest.mark.parametrize("model,gflops,mparams", PUBLISHED)
def test_flops_and_params_match_published(model, gflops, mparams):
    summary = inspect_model(model).summary
    assert summary.total_flops / 1e9 == pytest.approx(gflops, rel=0.01)
    assert summary.total_params / 1e6 == pytest.approx(mparams, rel=0.01)


def test_yolov2_608_conv_flops_match_darknet():
    report = inspect_model("yolov2")
    assert report.input_shape == (1, 3, 608, 608)
    layers = report.summary.layers
    conv_flops = sum(info.flops for _, info in layers if info.kind == "conv2d")
    assert conv_flops / 1e9 == pytest.approx(62.94, rel=0.01)
    assert sum(1 for _, info in layers if info.kind == "conv2d") == 23
    assert [info.output_shape for _, info in layers][-1] == (1, 425, 19, 19)


def test_yolov2_has_passthrough_reorg_and_concat():
    layers = dict(inspect_model("yolov2").summary.layers)
    reorg = [info for info in layers.values() if info.kind == "reorg"]
    cat = [info for info in layers.values() if info.kind == "cat"]
    assert len(reorg) == 1 and reorg[0].attrs == {"stride": 2}
    assert reorg[0].input_shapes == ((1, 64, 38, 38),) and reorg[0].output_shape == (1, 256, 19, 19)
    assert len(cat) == 1 and cat[0].output_shape == (1, 1280, 19, 19)


def test_lenet5_is_hiertrains_cifar_variant():
    report = inspect_model("lenet5")
    assert report.input_shape == (1, 3, 32, 32)
    assert report.summary.total_params == 62006
    kinds = [info.kind for _, info in report.summary.layers]
    assert kinds.count("conv2d") == 2 and kinds.count("linear") == 3


@pytest.mark.parametrize("model", ["googlenet", "inception_v3", "mobilenet_v3_small", "shufflenet_v2_x0_5",
                                   "efficientnet_b0", "densenet121"])
def test_other_torchvision_models_analyse_with_no_unknown_ops(model):
    report = inspect_model(model)
    unknown = [(name, info.target) for name, info in report.summary.layers if info.kind == "unknown"]
    assert unknown == []
    assert report.summary.total_params == sum(p.numel() for p in __import__("torchvision").models.get_model(
        model, weights=None, **({"aux_logits": False, "init_weights": True}
                                if model in ("googlenet", "inception_v3") else {})).parameters())

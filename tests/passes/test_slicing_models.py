"""Equivalence of sliced and cut plans on real models (design.md tolerance), several plans per model."""

import functools

import pytest

from halocut.runtime.reference import verify_plan

from tests.support.plans import analysed, grid_tiles, names, plan, row_tiles, shape_of

cached = functools.cache(analysed)


def hw(gm, name):
    return shape_of(gm, name)[-2:]


def vgg16_plans(gm):
    a, b = hw(gm, "features_4"), hw(gm, "features_16")
    return [
        [("spatial", "features_4", row_tiles(*a, [1, 2, 7, 9, 12, 15])),          # 7 uneven, 1-row tiles
         ("spatial", "features_16", grid_tiles(*b, [1, 2, 3], [1, 2, 3])),         # 4x4 grid
         ("single", "flatten", 0),
         ("fc", "classifier_5", ("hybrid", [(0, 1000), (1000, 1024), (1024, 4096)])),
         ("fc", "classifier_6", ("data", [(0, 100), (100, 4096)]))],
        [("spatial", "features_9", row_tiles(*hw(gm, "features_9"), [4])),
         ("single", "flatten", 1),
         ("fc", "classifier_2", ("model", [(0, 7), (7, 2048), (2048, 4096)])),
         ("fc", None, ("hybrid", [(0, 4095), (4095, 4096)]))],
    ]


def resnet50_plans(gm):
    return [
        [("spatial", "layer1_2_relu_2", row_tiles(*hw(gm, "layer1_2_relu_2"), [3, 4, 11])),
         ("spatial", "layer3_5_relu_2", grid_tiles(*hw(gm, "layer3_5_relu_2"), [1], [2, 3])),
         ("single", "flatten", 2), ("fc", None, ("model", [(0, 10), (10, 1000)]))],
        # a cut inside the first block: its residual branch (maxpool) crosses the cut into a spatial stage
        [("single", "layer1_0_bn2", 0),
         ("spatial", "layer2_3_relu_2", (row_tiles(*hw(gm, "layer2_3_relu_2"), [2, 5]), ["layer1_1_relu_2"])),
         ("single", None, 1)],
        [("spatial", "layer4_2_relu_2", grid_tiles(*hw(gm, "layer4_2_relu_2"), [1], [1])),
         ("single", "avgpool", 3), ("single", None, 0)],
    ]


def mobilenet_v2_plans(gm):
    return [
        [("spatial", "add", row_tiles(*hw(gm, "add"), [1, 5, 6, 13])),
         ("spatial", "features_14_conv_2", grid_tiles(*hw(gm, "features_14_conv_2"), [1], [1])),
         ("single", "classifier_0", 0), ("fc", None, ("data", [(0, 640), (640, 1280)]))],
        [("single", "features_1_conv_2", 1),
         ("spatial", "features_18_2", grid_tiles(*hw(gm, "features_18_2"), [1], [1])),
         ("single", None, 2)],
    ]


def googlenet_plans(gm):
    return [
        [("spatial", "cat_1", row_tiles(*hw(gm, "cat_1"), [1, 2, 5])),            # ceil_mode max pools
         ("spatial", "maxpool4", grid_tiles(*hw(gm, "maxpool4"), [1], [1])),
         ("single", "dropout", 0), ("fc", None, ("model", [(0, 333), (333, 1000)]))],
        [("single", "cat", 1), ("spatial", "cat_6", row_tiles(*hw(gm, "cat_6"), [1, 3])), ("single", None, 2)],
    ]


def inception_v3_plans(gm):
    return [
        [("spatial", "cat_2", row_tiles(*hw(gm, "cat_2"), [1, 4, 6])),            # padded avg pools
         ("single", None, 0)],
        [("single", "maxpool2", 2), ("spatial", "cat_3", grid_tiles(*hw(gm, "cat_3"), [1], [1])),
         ("single", None, 3)],
    ]


def yolov2_plans(gm):
    return [
        [("spatial", "cat", row_tiles(*hw(gm, "cat"), [1])),                     # reorg + concat inside
         ("spatial", None, grid_tiles(*hw(gm, "detect"), [1], [1]))],
        [("spatial", "stage1_16_2", row_tiles(*hw(gm, "stage1_16_2"), [1, 3])),
         ("spatial", "cat", grid_tiles(*hw(gm, "cat"), [1], [1])), ("single", None, 1)],
    ]


def alexnet_plans(gm):
    return [
        [("spatial", "features_12", row_tiles(*hw(gm, "features_12"), [1])),
         ("single", "classifier_0", 0),
         ("fc", "classifier_5", ("hybrid", [(0, 1024), (1024, 3000), (3000, 4096)])),
         ("fc", None, ("model", [(0, 1), (1, 1000)]))],
        [("spatial", "features_5", grid_tiles(*hw(gm, "features_5"), [1, 2, 3], [2, 3])),
         ("single", "classifier_3", 1), ("fc", "classifier_4", ("data", [(0, 4000), (4000, 4096)])),
         ("single", None, 2)],
    ]


CASES = [
    ("vgg16", (1, 3, 64, 64), vgg16_plans),
    ("resnet50", (1, 3, 64, 64), resnet50_plans),
    ("mobilenet_v2", (1, 3, 64, 64), mobilenet_v2_plans),
    ("googlenet", (1, 3, 64, 64), googlenet_plans),
    ("inception_v3", (1, 3, 96, 96), inception_v3_plans),
    ("yolov2", (1, 3, 64, 64), yolov2_plans),
    ("alexnet", (1, 3, 96, 96), alexnet_plans),
]


@pytest.mark.parametrize("model,shape,make", CASES, ids=[c[0] for c in CASES])
def test_sliced_plans_reproduce_the_model(model, shape, make):
    gm = cached(model, shape)
    for segments in make(gm):
        p = plan(gm, model, shape, segments)
        verify_plan(gm, p)


def test_resnet18_cut_after_every_layer():
    gm = cached("resnet18", (1, 3, 32, 32))
    order = names(gm)
    for cut in order[:-1]:
        p = plan(gm, "resnet18", (1, 3, 32, 32), [("single", cut, 0), ("single", None, 1)])
        verify_plan(gm, p)
    every = [("single", name, i) for i, name in enumerate(order[:-1])] + [("single", None, 0)]
    verify_plan(gm, plan(gm, "resnet18", (1, 3, 32, 32), every))


@pytest.mark.parametrize("model,shape,make", [CASES[1], CASES[2], CASES[5]], ids=["resnet50", "mobilenet_v2", "yolov2"])
def test_plans_on_the_batchnorm_folded_graph(model, shape, make):
    from halocut.compiler.frontend import load_model
    from halocut.ir.layers import annotate_layers
    from halocut.passes.fold import fold_batchnorm

    loaded = load_model(model, shape)
    folded = fold_batchnorm(loaded.graph_module)
    annotate_layers(folded, shape)
    original = names(cached(model, shape))
    kept = set(names(folded))
    for segments in make(cached(model, shape))[:1]:
        # the same segment boundaries, minus the batch norms folding removed
        segments = [(kind, last if last is None or last in kept else original[original.index(last) - 1], arg)
                    for kind, last, arg in segments]
        p = plan(folded, model, shape, segments)
        verify_plan(folded, p, original=loaded.module)


def test_inplace_activations_inside_tiles_do_not_touch_neighbouring_halos():
    from torch import nn

    gm = analysed(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                nn.Conv2d(4, 4, 3, padding=1), nn.Hardswish(inplace=True)), (1, 3, 16, 16))
    order = names(gm)
    # a volume that starts at the in-place activation reads crops of the conv's output
    p = plan(gm, "m", (1, 3, 16, 16), [("single", order[0], 0), ("spatial", None, row_tiles(16, 16, [5, 9]))])
    verify_plan(gm, p)


def test_chains_can_stop_at_pads_and_functional_average_pools():
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1, 1))

    gm = analysed(Net(), (1, 3, 12, 12))
    for until in ("pad", "avg_pool2d"):
        p = plan(gm, "m", (1, 3, 12, 12), [("spatial", None, (grid_tiles(12, 12, [5], [6]), [until]))])
        verify_plan(gm, p)

"""Layer analysis: op recognition in every written form, exact attributes and FLOPs."""

import operator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from halocut.compiler.frontend import export_graph, load_model, trace
from halocut.ir.layers import LayerInfo, annotate_layers, summarize


def layers_of(module: nn.Module, shape=(1, 4, 16, 16)) -> list[LayerInfo]:
    gm, _ = trace(module.eval(), shape)
    annotate_layers(gm, shape)
    return [n.meta["layer"] for n in gm.graph.nodes if "layer" in n.meta]


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


SAME_OP = {
    "relu": [nn.ReLU(), Lambda(F.relu), Lambda(torch.relu), Lambda(lambda x: x.relu())],
    "add": [Lambda(lambda x: x + x), Lambda(lambda x: operator.add(x, x)), Lambda(lambda x: torch.add(x, x)),
            Lambda(lambda x: x.add(x))],
    "flatten": [nn.Flatten(), Lambda(lambda x: torch.flatten(x, 1)), Lambda(lambda x: x.flatten(1))],
    "reshape": [Lambda(lambda x: x.view(1, -1)), Lambda(lambda x: x.reshape(1, -1)),
                Lambda(lambda x: torch.reshape(x, (1, -1)))],
    "maxpool2d": [nn.MaxPool2d(3, 2, 1), Lambda(lambda x: F.max_pool2d(x, 3, 2, 1))],
    "avgpool2d": [nn.AvgPool2d(2), Lambda(lambda x: F.avg_pool2d(x, 2))],
    "adaptive_avgpool2d": [nn.AdaptiveAvgPool2d(1), Lambda(lambda x: F.adaptive_avg_pool2d(x, 1))],
    "cat": [Lambda(lambda x: torch.cat([x, x], 1)), Lambda(lambda x: torch.cat((x, x), dim=1))],
    "reorg": [nn.PixelUnshuffle(2), Lambda(lambda x: F.pixel_unshuffle(x, 2))],
    "upsample": [nn.Upsample(scale_factor=2), Lambda(lambda x: F.interpolate(x, scale_factor=2))],
    "sigmoid": [nn.Sigmoid(), Lambda(torch.sigmoid), Lambda(lambda x: x.sigmoid())],
    "leaky_relu": [nn.LeakyReLU(0.1), Lambda(lambda x: F.leaky_relu(x, 0.1))],
    "pad": [nn.ZeroPad2d((1, 2, 3, 4)), Lambda(lambda x: F.pad(x, (1, 2, 3, 4)))],
}


@pytest.mark.parametrize("kind", sorted(SAME_OP))
def test_same_op_in_every_form_gets_same_kind_and_attrs(kind):
    seen = []
    for module in SAME_OP[kind]:
        (layer,) = [info for info in layers_of(module) if info.kind not in ("size",)]
        assert layer.kind == kind, layer.target
        seen.append((layer.attrs, layer.output_shapes))
    assert all(s == seen[0] for s in seen), seen


def test_export_aten_forms_get_the_same_kinds_as_symbolic_trace():
    model = load_model("resnet18", (1, 3, 64, 64))
    exported = export_graph(model.module, (1, 3, 64, 64))
    annotate_layers(model.graph_module, (1, 3, 64, 64))
    annotate_layers(exported, (1, 3, 64, 64))
    fx_kinds = [info.kind for _, info in summarize(model.graph_module).layers]
    aten_kinds = [info.kind for _, info in summarize(exported).layers]
    assert fx_kinds == aten_kinds
    fx_convs = [i.attrs for _, i in summarize(model.graph_module).layers if i.kind == "conv2d"]
    aten_convs = [i.attrs for _, i in summarize(exported).layers if i.kind == "conv2d"]
    strip = lambda attrs: {k: v for k, v in attrs.items() if k != "padding_mode"}  # noqa: E731
    assert [strip(a) for a in fx_convs] == [strip(a) for a in aten_convs]
    assert summarize(exported).total_flops == summarize(model.graph_module).total_flops
    assert summarize(exported).total_params == summarize(model.graph_module).total_params


def test_conv_attributes_padding_as_four_sides_and_same():
    conv = nn.Conv2d(4, 8, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=2, bias=False)
    (layer,) = layers_of(conv)
    assert layer.attrs == {"in_channels": 4, "out_channels": 8, "kernel": (3, 5), "stride": (1, 2),
                           "dilation": (2, 1), "padding": (1, 1, 2, 2), "groups": 2, "bias": False,
                           "padding_mode": "zeros"}
    (same,) = layers_of(nn.Conv2d(4, 4, 4, padding="same"))
    assert same.attrs["padding"] == (1, 2, 1, 2)  # torch puts the odd row/column at the end
    weight = torch.randn(8, 4, 3, 3)
    (functional,) = [i for i in layers_of(Lambda(lambda x: F.conv2d(x, weight, None, 2, 1))) if i.kind == "conv2d"]
    assert functional.attrs["stride"] == (2, 2) and functional.attrs["padding"] == (1, 1, 1, 1)


def test_pool_attributes_and_ceil_mode():
    (layer,) = layers_of(nn.MaxPool2d(3, 2, padding=1, ceil_mode=True))
    assert layer.attrs == {"kernel": (3, 3), "stride": (2, 2), "dilation": (1, 1), "padding": (1, 1, 1, 1),
                           "ceil_mode": True}
    assert layer.output_shape == (1, 4, 9, 9)


def test_unknown_op_is_kept_and_named():
    (layer,) = layers_of(Lambda(lambda x: torch.erf(x)))
    assert layer.kind == "unknown" and layer.target.endswith("erf")
    assert layer.output_shape == (1, 4, 16, 16)


def relu(x):
    """A user's own function that happens to be called relu: not torch's."""
    return x * 2


fx.wrap("relu")


def test_user_function_with_a_torch_name_is_not_mistaken():
    class Custom(nn.Module):
        def forward(self, x):
            return relu(x)

    (layer,) = layers_of(Custom())
    assert layer.kind == "unknown" and layer.target.endswith("test_layers.relu")


def test_shape_arithmetic_is_size_not_unknown():
    layers = layers_of(Lambda(lambda x: x.view(x.size(0), x.size(1) // 2, -1)))
    assert [i.kind for i in layers] == ["size", "size", "size", "reshape"]


def test_layer_info_is_frozen_and_bytes_are_exact():
    (layer,) = [i for i in layers_of(nn.Conv2d(4, 6, 3)) if i.kind == "conv2d"]
    with pytest.raises(AttributeError):
        layer.flops = 0
    assert layer.output_bytes == 6 * 14 * 14 * 4
    assert layer.params == 6 * 4 * 9 + 6 and layer.param_bytes == layer.params * 4


def test_linear_flops_two_per_multiply_add():
    (layer,) = [i for i in layers_of(nn.Sequential(nn.Flatten(), nn.Linear(4 * 16 * 16, 10)))
                if i.kind == "linear"]
    assert layer.flops == 2 * 4 * 16 * 16 * 10
    assert layer.attrs == {"in_features": 1024, "out_features": 10, "bias": True}


conv_spec = st.fixed_dictionaries({
    "kernel": st.integers(1, 5), "stride": st.integers(1, 3), "padding": st.integers(0, 2),
    "dilation": st.integers(1, 2), "groups": st.sampled_from([1, 2, 4]), "out": st.sampled_from([4, 8]),
    "form": st.sampled_from(["module", "functional"]), "pool": st.sampled_from([None, "max", "avg"]),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(conv_spec, min_size=1, max_size=4), st.integers(17, 40))
def test_random_conv_stacks_flops_and_shapes_follow_the_formula(specs, size):
    layers, channels, height, expected_flops = [], 4, size, 0
    for spec in specs:
        k, s, p, d, g = spec["kernel"], spec["stride"], spec["padding"], spec["dilation"], spec["groups"]
        out_height = (height + 2 * p - d * (k - 1) - 1) // s + 1
        if out_height < 2:
            break
        conv = nn.Conv2d(channels, spec["out"], k, s, p, d, groups=g)
        layers.append(conv if spec["form"] == "module" else Lambda(
            lambda x, c=conv: F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)))
        expected_flops += 2 * spec["out"] * out_height * out_height * (channels // g) * k * k
        channels, height = spec["out"], out_height
        if spec["pool"] and height >= 2:
            layers.append(nn.MaxPool2d(2) if spec["pool"] == "max" else nn.AvgPool2d(2))
            height //= 2
    model = nn.Sequential(*layers)
    infos = layers_of(model, (1, 4, size, size))
    convs = [i for i in infos if i.kind == "conv2d"]
    assert sum(i.flops for i in infos) == expected_flops
    assert len(convs) == sum(1 for spec in specs) or len(convs) < len(specs)
    if infos:
        assert infos[-1].output_shape == (1, channels, height, height)

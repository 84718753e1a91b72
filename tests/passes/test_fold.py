"""fold_batchnorm: equivalence with random BN statistics, what is folded and what stays, both graph forms, refusals."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from halocut.compiler.frontend import export_graph, load_model
from halocut.ir.errors import HalocutError
from halocut.ir.ops import op_kind
from halocut.passes.fold import fold_batchnorm

SHAPE = (1, 3, 64, 64)
MODELS = ("resnet18", "mobilenet_v2", "vgg16_bn", "yolov2", "googlenet")


def randomize_batchnorms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random statistics, scale and shift in every batch norm, so that folding changes the weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, _BatchNorm):
                features = norm.num_features
                norm.running_mean.copy_(0.5 * torch.randn(features, generator=generator))
                norm.running_var.uniform_(0.5, 2.0, generator=generator)
                if norm.affine:
                    norm.weight.uniform_(0.5, 1.5, generator=generator)
                    norm.bias.copy_(0.5 * torch.randn(features, generator=generator))
    return module


def assert_equivalent(folded, original, x: torch.Tensor) -> None:
    with torch.no_grad():
        reference = original(x)
        result = folded(x)
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-4 * max(1.0, reference.abs().max().item()))


def kinds(graph_module: fx.GraphModule) -> list[str]:
    return [op_kind(n, graph_module) for n in graph_module.graph.nodes if n.op.startswith("call")]


def traced(module: nn.Module, seed: int = 0) -> fx.GraphModule:
    return fx.symbolic_trace(randomize_batchnorms(module, seed).eval())


@functools.cache
def loaded(name: str):
    model = load_model(name, SHAPE)
    randomize_batchnorms(model.module, seed=len(name))
    return model


@functools.cache
def folded_model(name: str) -> fx.GraphModule:
    return fold_batchnorm(loaded(name).graph_module)


@pytest.mark.parametrize("name", MODELS)
def test_real_models_stay_equivalent(name):
    assert_equivalent(folded_model(name), loaded(name).module, torch.randn(SHAPE))


@pytest.mark.parametrize("name", ("resnet18", "mobilenet_v2", "yolov2"))
def test_real_models_lose_every_norm_and_dropout_and_keep_their_convs(name):
    before, after = kinds(loaded(name).graph_module), kinds(folded_model(name))
    assert before.count("batchnorm2d") > 0
    assert after.count("batchnorm2d") == 0 and after.count("dropout") == 0
    assert after.count("conv2d") == before.count("conv2d")
    assert not any("running_mean" in key for key in folded_model(name).state_dict())


def test_random_statistics_make_a_wrong_fold_visible():
    """Dropping the norms instead of folding them must break equivalence, or the tests above prove nothing."""
    bypassed = copy.deepcopy(loaded("resnet18").graph_module)
    for node in list(bypassed.graph.nodes):
        if node.op == "call_module" and op_kind(node, bypassed) == "batchnorm2d":
            node.replace_all_uses_with(node.args[0])
            bypassed.graph.erase_node(node)
    bypassed.recompile()
    with pytest.raises(AssertionError):
        assert_equivalent(bypassed, loaded("resnet18").module, torch.randn(SHAPE))


def test_norm_after_a_nonlinearity_is_kept():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6))
    folded = fold_batchnorm(traced(model))
    assert kinds(folded) == ["conv2d", "relu", "batchnorm2d"]
    assert_equivalent(folded, model, torch.randn(2, 3, 10, 10))


class SharedOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_norm_of_a_conv_output_read_elsewhere_is_kept():
    model = SharedOutput()
    graph_module = traced(model)
    folded = fold_batchnorm(graph_module)
    assert kinds(folded) == ["conv2d", "batchnorm2d", "add"]
    torch.testing.assert_close(folded.conv.weight, graph_module.conv.weight)
    assert_equivalent(folded, model, torch.randn(1, 3, 8, 8))


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) * self.conv(x)


def test_conv_module_called_twice_keeps_its_unfolded_call():
    model = SharedConv()
    folded = fold_batchnorm(traced(model))
    convs = [n.target for n in folded.graph.nodes if n.op == "call_module"]
    assert len(convs) == 2 and len(set(convs)) == 2 and "batchnorm2d" not in kinds(folded)
    assert_equivalent(folded, model, torch.randn(1, 4, 7, 7))


def test_identity_between_conv_and_norm_is_removed_and_the_norm_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Identity(), nn.BatchNorm2d(4, affine=False))
    folded = fold_batchnorm(traced(model))
    assert kinds(folded) == ["conv2d"] and folded.get_submodule("0").bias is not None
    assert_equivalent(folded, model, torch.randn(1, 3, 9, 9))


class EvalIdentities(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.3)
        self.skip = nn.Identity()
        self.depth = torchvision.ops.StochasticDepth(0.2, "row")

    def forward(self, x):
        x = self.skip(self.drop2d(self.drop(self.conv(x))))
        x = F.dropout(x, 0.1, training=self.training) + F.dropout2d(x, 0.2, training=False)
        return torch.clone(self.depth(x).contiguous())


def test_dropout_and_identity_go_contiguous_and_clone_stay():
    model = EvalIdentities().eval()
    graph_module = fx.symbolic_trace(model)
    folded = fold_batchnorm(graph_module)
    assert [n.target for n in folded.graph.nodes if n.op == "call_module"] == ["conv"]
    assert [str(getattr(n.target, "__name__", n.target)) for n in folded.graph.nodes
            if n.op in ("call_function", "call_method")] == ["add", "contiguous", "clone"]
    assert not hasattr(folded, "drop") and hasattr(graph_module, "drop")
    assert_equivalent(folded, model, torch.randn(1, 3, 5, 5))


def test_linear_then_batchnorm1d_is_folded():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10), nn.BatchNorm1d(10), nn.ReLU(),
                          nn.Linear(10, 6, bias=False), nn.BatchNorm1d(6, affine=False))
    folded = fold_batchnorm(traced(model))
    assert kinds(folded) == ["flatten", "linear", "relu", "linear"]
    assert_equivalent(folded, model, torch.randn(3, 3, 4, 4))


class LinearOverLength(nn.Module):
    """Linear acts on the last dim, BatchNorm1d on dim 1; equal sizes make the shapes fit but not the maths."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_linear_on_three_dims_is_not_folded_when_shapes_are_known():
    model = LinearOverLength()
    x = torch.randn(2, 4, 6)
    graph_module = traced(model)
    ShapeProp(graph_module).propagate(x)
    folded = fold_batchnorm(graph_module)
    assert [n.target for n in folded.graph.nodes if n.op == "call_module"] == ["fc", "bn"]
    assert_equivalent(folded, model, x)
    folded = fold_batchnorm(export_graph(model, tuple(x.shape)))
    assert kinds(folded).count("batchnorm2d") == 1
    assert_equivalent(folded, model, x)


def test_exported_resnet18_folds_in_aten_form():
    model = loaded("resnet18").module
    exported = export_graph(model, SHAPE)
    folded = fold_batchnorm(exported)
    assert kinds(exported).count("batchnorm2d") == 20
    assert kinds(folded).count("batchnorm2d") == 0
    assert kinds(folded).count("conv2d") == kinds(exported).count("conv2d") == 20
    assert not any("bn" in key or "downsample.1" in key for key in folded.state_dict())
    assert_equivalent(folded, model, torch.randn(SHAPE))


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(6, affine=False)
        self.fc = nn.Linear(6 * 3 * 3, 5)
        self.bn3 = nn.BatchNorm1d(5)
        self.drop = nn.Dropout()

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.drop(self.bn2(self.conv2(x)))
        return self.bn3(self.fc(x.flatten(1)))


@pytest.mark.parametrize("decomposed", [False, True], ids=["export", "run_decompositions"])
def test_small_exported_model_folds_conv_and_linear_norms(decomposed):
    model = randomize_batchnorms(Mixed(), seed=3).eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x,))
    graph_module = (program.run_decompositions() if decomposed else program).module()
    folded = fold_batchnorm(graph_module)
    # After decomposition the linear is an addmm, which is not folded.
    assert kinds(folded).count("batchnorm2d") == (1 if decomposed else 0)
    assert kinds(folded).count("dropout") == 0
    assert_equivalent(folded, model, x)


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn1(self.conv(x))


def test_training_mode_norm_is_refused_with_its_layer_name():
    model = Named().train()
    with pytest.raises(HalocutError, match=r"^layer 'bn1': BatchNorm in training mode .*model\.eval\(\)$"):
        fold_batchnorm(fx.symbolic_trace(model))
    exported = torch.export.export(model, (torch.randn(2, 3, 6, 6),)).module()
    with pytest.raises(HalocutError, match=r"^layer 'bn1': BatchNorm in training mode"):
        fold_batchnorm(exported)


def test_active_dropout_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5)).train()
    with pytest.raises(HalocutError, match=r"^layer '1': dropout in training mode"):
        fold_batchnorm(fx.symbolic_trace(model))

    class AlwaysDropping(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5)  # training defaults to True

    with pytest.raises(HalocutError, match="dropout in training mode"):
        fold_batchnorm(fx.symbolic_trace(AlwaysDropping().eval()))


@pytest.mark.parametrize("source", ["resnet18", "mixed"])
def test_input_graph_module_is_not_mutated(source):
    if source == "resnet18":
        graph_module, x = traced(torchvision.models.resnet18()), torch.randn(SHAPE)
    else:
        graph_module, x = traced(Mixed()), torch.randn(2, 3, 8, 8)
    nodes = [(n.name, n.op, str(n.target), str(n.args)) for n in graph_module.graph.nodes]
    state = {key: value.clone() for key, value in graph_module.state_dict().items()}
    code = graph_module.code
    with torch.no_grad():
        output = graph_module(x)
    fold_batchnorm(graph_module)
    assert [(n.name, n.op, str(n.target), str(n.args)) for n in graph_module.graph.nodes] == nodes
    assert graph_module.code == code and graph_module.state_dict().keys() == state.keys()
    for key, value in graph_module.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        assert torch.equal(graph_module(x), output)


@st.composite
def conv_stacks(draw):
    """Random Conv2d (+ BN) (+ ReLU) layers that fit a random input size."""
    channels, size = draw(st.integers(1, 6)), draw(st.integers(5, 12))
    input_shape, layers = (draw(st.integers(1, 2)), channels, size, size), []
    for _ in range(draw(st.integers(1, 4))):
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
        out_channels = groups * draw(st.integers(1, 3))
        kernel, padding = draw(st.integers(1, min(5, size))), draw(st.integers(0, 2))
        dilation = draw(st.integers(1, 2)) if 2 * (kernel - 1) + 1 <= size + 2 * padding else 1
        stride = draw(st.integers(1, 3))
        layers.append(dict(conv=(channels, out_channels, kernel, stride, padding, dilation, groups),
                           bias=draw(st.booleans()), norm=draw(st.sampled_from(["none", "affine", "plain"])),
                           relu=draw(st.booleans())))
        channels, size = out_channels, (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return input_shape, layers, draw(st.integers(0, 2**16))


def build(layers) -> nn.Sequential:
    modules = []
    for layer in layers:
        modules.append(nn.Conv2d(*layer["conv"], bias=layer["bias"]))
        if layer["norm"] != "none":
            modules.append(nn.BatchNorm2d(layer["conv"][1], affine=layer["norm"] == "affine"))
        if layer["relu"]:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


@settings(max_examples=40, deadline=None)
@given(conv_stacks())
def test_random_conv_stacks_fold_to_equivalent_convs(stack):
    input_shape, layers, seed = stack
    torch.manual_seed(seed)
    model = build(layers)
    folded = fold_batchnorm(traced(model, seed))
    assert kinds(folded).count("batchnorm2d") == 0
    assert kinds(folded).count("conv2d") == len(layers)
    assert_equivalent(folded, model, torch.randn(input_shape))

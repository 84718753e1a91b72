"""Front end: the three ways to name a model, both tracers, weights, and the errors users see."""

import textwrap

import pytest
import torch
from torch import nn

from halocut.compiler.frontend import known_models, load_model, parse_shape
from halocut.ir.errors import HalocutError


def write(tmp_path, text, name="model.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_torchvision_and_zoo_names_trace_in_eval_mode():
    for name in ("mobilenet_v2", "yolov2"):
        loaded = load_model(name, (1, 3, 64, 64))
        assert not loaded.module.training and loaded.tracer == "symbolic_trace"
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(loaded.graph_module(x), loaded.module(x))
    assert {"vgg16", "resnet50", "googlenet", "inception_v3", "yolov2", "lenet5"} <= set(known_models())
    assert load_model("inception_v3").input_shape == (1, 3, 299, 299)


def test_file_factory_with_input_shape_from_file(tmp_path):
    path = write(tmp_path, """
        from torch import nn
        INPUT_SHAPE = (1, 3, 20, 20)
        def make():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    """)
    loaded = load_model(f"{path}:make")
    assert loaded.input_shape == (1, 3, 20, 20) and loaded.name == "model:make"
    assert load_model(f"{path}:make", (1, 3, 9, 9)).input_shape == (1, 3, 9, 9)


def test_in_memory_module_and_its_input_shape_attribute():
    module = nn.Sequential(nn.Conv2d(1, 2, 3))
    module.input_shape = (1, 1, 12, 12)
    assert load_model(module).input_shape == (1, 1, 12, 12)


def test_untraceable_by_fx_falls_back_to_torch_export():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.shape[-1] > 8:  # fx cannot branch on a traced shape; export specialises it
                return self.conv(x)
            return x

    loaded = load_model(ShapeBranch(), (1, 3, 16, 16))
    assert loaded.tracer == "torch.export"
    assert not any(n.target == "_guards_fn" for n in loaded.graph_module.graph.nodes)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(loaded.graph_module(x), loaded.module(x))


def test_untraceable_by_both_names_the_construct():
    class DataBranch(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(HalocutError, match=r"cannot trace DataBranch: symbolic_trace: .*control flow.*torch.export"):
        load_model(DataBranch(), (1, 3, 4, 4))


def test_local_state_dict_weights(tmp_path):
    source = load_model("lenet5").module
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = load_model("lenet5", weights=path)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.graph_module(x), source(x))


BAD_SPECS = [
    ("vgg17", r"unknown model 'vgg17'; known models: .*vgg16.*yolov2"),
    ("missing.py:make", r"file 'missing.py' does not exist"),
    ("{dir}/model.py:", r"expected 'path/to/file.py:factory'"),
    ("{dir}/model.py:nope", r"has no 'nope'; callables there: .*make"),
    ("{dir}/model.py:CONSTANT", r"'CONSTANT' in .* is not callable"),
    ("{dir}/model.py:broken", r"calling 'broken\(\)' failed: ValueError: bad config|calling 'broken\(\)' failed: bad config"),
    ("{dir}/model.py:not_a_module", r"returned int, not an nn.Module"),
    ("{dir}/syntax.py:make", r"importing .* failed"),
    ("{dir}/notes.txt:make", r"is not a .py file"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS)
def test_bad_model_specs_say_which_part_is_wrong(tmp_path, spec, message):
    write(tmp_path, """
        from torch import nn
        CONSTANT = 3
        def make():
            return nn.Conv2d(3, 3, 1)
        def broken():
            raise ValueError("bad config")
        def not_a_module():
            return 3
    """)
    write(tmp_path, "def make(:\n", "syntax.py")
    write(tmp_path, "", "notes.txt")
    with pytest.raises(HalocutError, match=message):
        load_model(spec.format(dir=tmp_path))


def test_bad_weights_files(tmp_path):
    with pytest.raises(HalocutError, match="weights .*does not exist"):
        load_model("lenet5", weights=tmp_path / "none.pt")
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(HalocutError, match=r"weights .*wrong.pt.*Missing key"):
        load_model("lenet5", weights=tmp_path / "wrong.pt")


@pytest.mark.parametrize("text", ["1,3,x", "1,0,4,4", ""])
def test_bad_shape_text(text):
    with pytest.raises(HalocutError, match="input shape"):
        parse_shape(text)


def test_random_initialisation_is_reproducible():
    first, second = load_model("lenet5").module, load_model("lenet5").module
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)

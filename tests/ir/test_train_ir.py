"""Layer groups (the chain training cuts a model into) and train plans (what train-plan writes and train
reads): groups end where one small tensor crosses; malformed plans are one-line errors naming the field."""

import json

import pytest
from torch import fx, nn

from halocut.compiler.commands import training_model
from halocut.ir.errors import HalocutError
from halocut.ir.layer_groups import layer_groups
from halocut.ir.layers import annotate_layers
from halocut.ir.train_plan import FORMAT, TrainPlan

PLAN = {"format": FORMAT, "model": "lenet5", "input_shape": [1, 3, 32, 32], "batch": 8, "policy": "hiertrain",
        "workers": {"device": "device", "edge": "edge", "cloud": "cloud"}, "groups": ["_0", "_3", "_7", "_9", "_11"],
        "mapping": {"o": "cloud", "s": "device", "l": "edge"}, "m_s": 1, "m_l": 3, "b_o": 4, "b_s": 2, "b_l": 2,
        "chain": None, "t_total_s": 0.1}


def test_lenet5_alexnet_resnet_and_batch_norm_groups():
    lenet = training_model("lenet5").groups
    assert [(g.name, g.nodes[-1], g.output_bytes) for g in lenet] == [
        ("_0", "_2", 6 * 14 * 14 * 4), ("_3", "_6", 400 * 4), ("_7", "_8", 480), ("_9", "_10", 336), ("_11", "_11", 40)]
    assert sum(g.params for g in lenet) == 62006 and sum(g.flops for g in lenet) == 1303440
    alexnet = training_model("alexnet", (1, 3, 64, 64)).groups
    assert len(alexnet) == 8  # paper 002, Sec. V: "AlexNet: 8 layers"
    assert alexnet[4].nodes[-1] == "features_12" and alexnet[4].output_bytes == 256 * 4  # the pool, not the avgpool
    resnet = training_model("resnet18", (1, 3, 64, 64)).groups
    assert len(resnet) == 10 and resnet[1].nodes[-1] == "layer1_0_relu_1"  # a residual block is one group
    vgg = training_model("examples/models/hiertrain.py:vgg_small").groups
    assert [len(g.nodes) for g in vgg[:3]] == [4, 4, 5] and vgg[0].params == 3 * 8 * 9 + 8 + 2 * 8  # BN joins its conv


def test_models_training_cannot_take_are_one_line_errors():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x), x

    graph = fx.symbolic_trace(Two())
    annotate_layers(graph, (1, 4))
    with pytest.raises(HalocutError, match="returns one tensor"):
        layer_groups(graph)
    graph = fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    annotate_layers(graph, (1, 4))
    with pytest.raises(HalocutError, match="conv or linear"):
        layer_groups(graph)
    with pytest.raises(HalocutError, match="annotated"):
        layer_groups(fx.symbolic_trace(nn.Linear(2, 2)))


def test_a_plan_round_trips(tmp_path):
    plan = TrainPlan.from_json(PLAN)
    plan.save(tmp_path / "p.json")
    again = TrainPlan.load(tmp_path / "p.json")
    assert again == plan and again.report["t_total_s"] == 0.1
    assert [list(plan.samples(t)) for t in "osl"] == [[0, 1, 2, 3], [4, 5], [6, 7]]


@pytest.mark.parametrize("change, message", [
    ({"format": "x"}, "format: 'halocut-train-plan/1' was expected"),
    ({"b_o": None}, "needs m_s, m_l, b_o, b_s and b_l"),
    ({"b_o": 5}, "b_o + b_s + b_l = 9, expected the batch 8"),
    ({"m_s": 4}, "m_s = 4, m_l = 3: need 0 <= m_s <= m_l <= 5"),
    ({"m_l": 6, "m_s": 1}, "need 0 <= m_s <= m_l <= 5"),
    ({"m_s": 0}, "b_s = 2 but m_s = 0"),
    ({"mapping": {"o": "cloud", "s": "cloud", "l": "edge"}}, "mapping: o, s and l must be the three workers"),
    ({"workers": {"device": "a", "edge": "a", "cloud": "b"}}, "three different machines"),
    ({"chain": ["device"] * 5}, "either a HierTrain schedule"),
    ({"mapping": None, "chain": ["device", "fridge", "cloud", "cloud", "cloud"]}, "chain: 'fridge'"),
    ({"batch": 0}, "batch: 0 is less than the minimum of 1"),
    ({"b_l": -1}, "b_l: -1 is less than the minimum of 0"),
])
def test_malformed_plans_name_the_field(change, message):
    with pytest.raises(HalocutError, match=message.replace("(", r"\(").replace("+", r"\+")) as error:
        TrainPlan.from_json({**PLAN, **change}, "p.json")
    assert "\n" not in str(error.value) and str(error.value).startswith("p.json: ")


def test_a_plan_file_that_is_not_json(tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(HalocutError, match="p.json: not JSON"):
        TrainPlan.load(tmp_path / "p.json")
    (tmp_path / "q.json").write_text(json.dumps([1]))
    with pytest.raises(HalocutError, match="the top level is a list"):
        TrainPlan.load(tmp_path / "q.json")

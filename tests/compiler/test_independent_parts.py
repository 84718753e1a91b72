"""Issue 12, item 4: parts are independent eval-mode copies, so exporting one cannot change another or the model.

torch.onnx.export puts a module back into the training mode it found; a part that shared a batch norm (one not
folded: it follows a concat) with its sibling tiles and the model, in training mode, made later exports and runs
use batch statistics and overwrite running_mean (densenet121 tiled: ONNX max error 1.55)."""

import torch
from torch import nn

from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.segments import grid_tiles, names, plan
from tests.support import ROOT


class ConcatNorm(nn.Module):
    """Two convolutions concatenated, then a batch norm that cannot fold into either, as in DenseNet."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.out(torch.relu(self.norm(torch.cat([self.a(x), self.b(x)], 1))))


def test_tiled_parts_with_a_shared_batch_norm_verify_on_every_backend(tmp_path):
    torch.manual_seed(0)
    model = ConcatNorm().eval()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shape = (1, 3, 16, 16)
    graph = prepare_model(model, shape).graph
    assert any("norm" in str(n.target) for n in graph.graph.nodes if n.op == "call_module")  # the BN stayed
    tiled = plan(graph, "concat-norm", shape, [("spatial", names(graph)[-1], grid_tiles(16, 16, [8], [8]))],
                 devices=("pi", "jetson", "edge", "cloud"))
    tiled.save(tmp_path / "plan.json")
    compilation = compile_model(CompileOptions(model, ROOT / "tests/data/mixed.yaml", tmp_path / "build",
                                               tmp_path / "plan.json", input_shape=shape, backends=("onnx", "torch"),
                                               progress=False))
    assert set(compilation.verification) == {"onnx", "torch"}
    assert all(v["max_abs_error"] <= v["tolerance"] for v in compilation.verification.values())
    emitted = {(name, a.backend) for name, artifacts in compilation.artifacts.items() for a in artifacts}
    verified = {(name, label) for label, v in compilation.verification.items() for name in v["parts"]}
    assert emitted == verified and len(emitted) > 4  # every artifact of every part ran, the Jetson's ONNX too
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

"""Item 1 of issue 12: shape arithmetic in forward folds to constants; every remaining node carries a tensor."""

import torch
import torch.nn.functional as F
from torch import nn

from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.ir.layers import value_bytes


class ShapeArithmetic(nn.Module):
    """A segmentation-style head: interpolates back to x.shape[-2:], flattens with x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        y = torch.relu(self.down(x))
        channels = y.size(1)
        y = y.view(y.size(0), channels, y.shape[2], -1)
        up = F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return self.fc(up.view(up.size(0), -1)), up


def test_shape_calls_fold_to_constants_and_every_node_moves_bytes():
    model = ShapeArithmetic().eval()
    prepared = prepare_model(model, (1, 3, 16, 16))
    nodes = compute_nodes(prepared.graph)
    assert all("tensor_meta" in n.meta for n in nodes), [n.name for n in nodes if "tensor_meta" not in n.meta]
    assert not [n for n in nodes if n.meta["layer"].kind == "size"]
    assert all(value_bytes(n) > 0 for n in nodes)
    x = torch.randn(1, 3, 16, 16)
    for got, want in zip(prepared.graph(x), model(x)):
        torch.testing.assert_close(got, want)

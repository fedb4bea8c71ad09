"""prune_channels with residual connections: every conv writing into a ResNet block's stream keeps the
same channels, BatchNorms / depthwise convs / readers follow, concatenations keep their channels."""
import torch
from torch import nn

from edgeopt.models import get_model
from edgeopt.prune import prune_channels


def test_resnet_blocks_shrink_together_and_still_run():
    torch.manual_seed(0)
    model = get_model("resnet10_cifar_slim").eval()
    x = torch.randn(2, 3, 32, 32)
    small, report = prune_channels(model, 0.5, x)
    rows = {r.name: r for r in report}
    # the residual stream of layer1: the stem and layer1.0.conv2 write into the same add -> one group
    assert rows["conv1"].channels == rows["layer1.0.conv2"].channels == (16, 8)
    assert "layer1.0.conv2" in rows["conv1"].applied[0]
    # a block's inner conv is a group of its own
    assert rows["layer1.0.conv1"].channels == (16, 8)
    # layer2's stream: the downsample conv and layer2.0.conv2
    assert rows["layer2.0.downsample.0"].channels == rows["layer2.0.conv2"].channels
    for name, m in small.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            conv = small.get_submodule(name.replace("bn", "conv").replace("downsample.1", "downsample.0"))
            assert m.num_features == conv.out_channels, name
    assert small.get_submodule("fc").in_features == small.get_submodule("layer4.0.conv2").out_channels
    assert small(x).shape == (2, 10)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(small) < 0.4 * params(model)
    assert model.conv1.out_channels == 16  # untouched


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 16, 3, padding=1)
        self.c = nn.Conv2d(32, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.d = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x), self.b(x)], 1))
        return self.d(torch.relu(self.bn(self.dw(y))))


def test_concatenated_channels_stay_and_depthwise_convs_follow():
    torch.manual_seed(0)
    model = Concat().eval()
    x = torch.randn(1, 3, 8, 8)
    small, report = prune_channels(model, 0.5, x)
    assert {r.name for r in report} == {"c"}  # a and b feed a concatenation: left whole
    assert small.get_submodule("dw").groups == small.get_submodule("dw").out_channels == 8
    assert small.get_submodule("bn").num_features == 8 and small.get_submodule("d").in_channels == 8
    assert small(x).shape == (1, 8, 8, 8)

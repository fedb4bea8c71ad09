"""edgeopt.nn.MaxPool2d (NHWC kernel) against torch's max_pool2d, float32 and uint8, on every ISA path."""
import pytest
import torch
from torch import nn

from edgeopt.nn import MaxPool2d

CASES = [  # (channels, h, w, kernel, stride, padding, dilation, ceil_mode)
    (64, 17, 16, 3, 2, 1, 1, False),
    (33, 9, 9, 2, 2, 0, 1, False),
    (7, 10, 11, 3, 2, 1, 1, True),
    (40, 8, 8, 3, 1, 1, 2, False),
    (3, 5, 7, (2, 3), (1, 2), (1, 1), 1, True),
    (1, 6, 6, 2, 2, 0, 1, False),
    (70, 1, 1, 3, 2, 1, 1, False),
    (100, 13, 11, 5, 2, 2, 1, False),     # two-vector, one-vector and tail steps; a 5-wide window
    (257, 6, 7, 4, 3, 1, 1, True),        # a window width with no unrolled kernel
    (19, 12, 3, (3, 1), (2, 1), (1, 0), (1, 2), False),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_matches_torch_exactly(isa, case, dtype):
    c, h, w, k, s, p, d, ceil = case
    torch.manual_seed(0)
    x = torch.randn(2, c, h, w) * 40
    x = x.clamp(0, 255).to(torch.uint8) if dtype == torch.uint8 else x
    ref = nn.functional.max_pool2d(x.float(), k, s, p, d, ceil_mode=ceil)
    pool = MaxPool2d.from_float(nn.MaxPool2d(k, s, p, d, ceil_mode=ceil))
    y = pool(x.contiguous(memory_format=torch.channels_last))
    assert y.dtype == dtype and y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.float(), ref)


def test_nan_propagates_like_torch(isa):
    x = torch.zeros(1, 20, 4, 4)
    x[0, 3, 1, 1] = float("nan")
    x[0, 17, 2, 2] = float("nan")
    y = MaxPool2d(2, 2)(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(torch.isnan(y), torch.isnan(nn.functional.max_pool2d(x, 2, 2)))


def test_other_inputs_fall_back_to_torch():
    pool = MaxPool2d(2, 2)
    x = torch.randn(1, 4, 6, 6)  # NCHW
    assert torch.equal(pool(x), nn.functional.max_pool2d(x, 2, 2))
    pool_idx = MaxPool2d(2, 2, return_indices=True)
    y, idx = pool_idx(x.contiguous(memory_format=torch.channels_last))
    assert idx.dtype == torch.int64


def test_compile_and_errors():
    pool = MaxPool2d(3, 2, 1)
    x = torch.randn(1, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.compile(pool, fullgraph=True)(x), pool(x))
    with pytest.raises(ValueError, match="smaller than the pooling window"):
        MaxPool2d(5, 1)(torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last))
    with pytest.raises(TypeError, match="expects nn.MaxPool2d"):
        MaxPool2d.from_float(nn.AvgPool2d(2))

"""edgeopt.prune: block magnitude masks, global/layer scope, gradual schedule kept applied during
training, conversion to sparse modules with a measured per-layer choice, structured channel pruning."""
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.prune import Pruner, gemm_view, prune_channels
from edgeopt.sparsify import format_report, sparsify


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def blocks_are_whole(mask2d, block):
    bo, bi = block
    n, k = mask2d.shape
    for i in range(0, n, bo):
        for j in range(0, k, bi):
            b = mask2d[i:i + bo, j:j + bi]
            if not (b.all() or not b.any()):
                return False
    return True


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("block", [(1, 1), (16, 4), (8, 4)])
def test_masks_are_blocks_and_reach_the_target(scope, block):
    model = small_cnn()
    p = edgeopt.prune(model, 0.7, block=block, scope=scope, min_weights=1024)
    rep = p.report()
    assert abs(rep.sparsity - 0.7) < 0.03
    for name, m in p.layers.items():
        mask = gemm_view(p.masks[name])
        assert blocks_are_whole(mask, block)
        assert torch.equal(gemm_view(m.weight) == 0, ~mask) or (gemm_view(m.weight)[~mask] == 0).all()
        if scope == "layer":
            assert abs(1 - mask.float().mean() - 0.7) < 0.05
    assert "pruned" in str(rep) and all("pruned" in r.applied[0] for r in rep)


def test_conv_blocks_follow_the_nhwc_gemm_order():
    conv = nn.Conv2d(8, 16, 3)
    p = Pruner(nn.Sequential(conv), 0.5, block=(16, 4), min_weights=1)
    m = p.masks["0"]  # (16, 8, 3, 3): a block = 16 outputs x 4 adjacent input channels of one tap
    assert (m.all(dim=0) | ~m.any(dim=0)).all()
    assert (m[:, 0:4].all(dim=1) | ~m[:, 0:4].any(dim=1)).all()


def test_gradual_schedule_keeps_masks_applied_while_training():
    model = small_cnn()
    p = edgeopt.prune(model, 0.8, block=(16, 4), steps=20, update_every=2, min_weights=1024)
    assert p.current == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    for _ in range(25):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()  # moves pruned weights...
        seen.append(p.step())  # ...and the masks are applied again
        for name, m in p.layers.items():
            assert (m.weight[~p.masks[name]] == 0).all()
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8)
    assert 0.0 < seen[5] < 0.8
    keys = set(model.state_dict())
    p.remove()
    assert set(model.state_dict()) == keys  # hooks, not parametrizations: checkpoints load unpruned models
    model(torch.randn(1, 3, 8, 8))


def test_errors():
    with pytest.raises(ValueError, match="sparsity"):
        edgeopt.prune(small_cnn(), 1.0)
    with pytest.raises(ValueError, match="scope"):
        edgeopt.prune(small_cnn(), 0.5, scope="net")
    with pytest.raises(ValueError, match="block"):
        edgeopt.prune(small_cnn(), 0.5, block=(0, 4))
    with pytest.raises(ValueError, match="large enough"):
        edgeopt.prune(nn.Sequential(nn.Linear(4, 4)), 0.5)


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_convert_measures_and_reports(dtype):
    model = small_cnn().eval()
    p = edgeopt.prune(model, 0.9, block=(16, 4), scope="layer", min_weights=1024)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    lowered, report = p.convert(dtype, data=[x])
    pruned = [r for r in report if r.name in p.layers]
    assert {r.name for r in pruned} == set(p.layers)
    for r in pruned:
        sparse = f"sparse {dtype}"
        assert r.kernel_us[sparse] > 0 and 0.05 < r.sparsity and r.kernel in r.kernel_us
        # the fastest kernel of the layer's dtype, a float one only when clearly faster
        same_dtype = {k: v for k, v in r.kernel_us.items() if k.endswith(dtype)}
        assert r.kernel == min(same_dtype, key=same_dtype.get) or not r.kernel.endswith(dtype)
        is_sparse = type(lowered.get_submodule(r.name)).__name__.startswith("Sparse")
        assert is_sparse == (r.kernel.startswith("sparse"))
        if is_sparse:
            assert 0.05 < r.block_density < 0.2
    for r in report:
        if r.name not in p.layers:
            assert not r.converted and r.reason == "not among the layers asked for"
    assert "measured" in format_report(report)
    with torch.no_grad():
        out = lowered(x)
    tol = 1e-4 if dtype == "fp32" else 0.1 * ref.abs().max()
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)


def test_sparsify_without_measuring_uses_the_density_rule():
    model = small_cnn().eval()
    edgeopt.prune(model, 0.8, block=(16, 4), scope="layer", min_weights=1024).remove()
    with torch.no_grad():
        model[3].weight.fill_(1.0)  # dense again: not a pruned layer
    x = torch.randn(2, 3, 16, 16)
    lowered, report = sparsify(model, [x], measure=False)
    assert not report["3"].converted and report["3"].reason == "not among the layers asked for"
    assert report["7"].kernel == "sparse int8" and report["7"].folded_bn == "8"
    assert type(lowered.get_submodule("7")).__name__ == "SparseConv2d"
    assert "8" not in dict(lowered.named_modules())  # BatchNorm folded into the converted conv
    with pytest.raises(ValueError, match="no pruned layer"):
        sparsify(small_cnn(), [x])
    with pytest.raises(TypeError, match="fold_bn= is gone"):
        sparsify(model, [x], fold_bn=True)


def test_prune_channels_gives_a_smaller_equivalent_shape_model():
    model = small_cnn().eval()
    x = torch.randn(2, 3, 16, 16)
    small, report = prune_channels(model, 0.5, x)
    assert [(r.name, r.channels[1]) for r in report] == [("0", 8), ("3", 16), ("7", 32)]
    assert small.get_submodule("12").in_features == 32 and small.get_submodule("1").num_features == 8
    assert small(x).shape == (2, 10)
    assert model[0].out_channels == 16  # the original is untouched
    same, rep0 = prune_channels(model, 0.0, x)
    assert len(rep0) == 0 and torch.allclose(same(x), model(x))

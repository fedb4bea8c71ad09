"""edgeopt.low_rank: rank choice (rank / energy / speedup), report contents, measured gating, errors."""
import pytest
import torch
from torch import nn

import edgeopt.low_rank
from edgeopt.low_rank import format_report, rank_for_speedup
from edgeopt.nn import LowRankLinear


def low_rank_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 192), nn.ReLU(), nn.Linear(192, 10))
    with torch.no_grad():  # first layer: rank 8 plus a little noise
        model[0].weight.copy_(torch.randn(192, 8) @ torch.randn(8, 256) / 16 + 1e-5 * torch.randn(192, 256))
    return model.eval()


def test_energy_rank_report_and_outputs():
    model = low_rank_model()
    x = torch.randn(5, 256)
    with torch.no_grad():
        expected = model(x)
    model, report = edgeopt.low_rank(model, energy=0.999, measure=False)
    first, last = report
    assert first.converted and first.rank == 8 and isinstance(model[0], LowRankLinear)
    assert first.macs_before == 256 * 192 and first.macs == 8 * (256 + 192)
    assert first.rel_error < 1e-3 and first.energy >= 0.999
    assert first.kernel_us == {} and first.kernel == "low-rank fp32" and first.applied == ["low rank r=8"]
    # the random 192x10 layer needs (almost) full rank: no MAC saving, left alone
    assert not last.converted and "no MAC saving" in last.reason and type(model[2]) is nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-3)
    text = format_report(report)
    assert "low rank r=8" in text and "no MAC saving" in text and text == str(report)


def test_rank_fraction_speedup_and_skip():
    assert rank_for_speedup(256, 256, 4.0) == 32
    _, report = edgeopt.low_rank(low_rank_model(), speedup=4.0, measure=False, skip=["2"])
    assert report[0].rank == rank_for_speedup(256, 192, 4.0) and report[0].converted
    assert report[1].reason == "skipped by request"
    _, report = edgeopt.low_rank(low_rank_model(), rank=0.25, measure=False)
    assert report[0].rank == 48


def test_measured_gating_is_consistent():
    model = low_rank_model()
    model, report = edgeopt.low_rank(model, rank=8, data=torch.randn(1, 256), repeats=3)
    for e in report:
        if e.kernel_us:
            dense_us, low_rank_us = e.kernel_us["torch fp32"], e.kernel_us["low-rank fp32"]
            assert dense_us > 0 and low_rank_us > 0
            assert e.converted == (low_rank_us * 1.05 <= dense_us)
            assert isinstance(model.get_submodule(e.name), LowRankLinear) == e.converted


def test_errors():
    with pytest.raises(ValueError, match="exactly one"):
        edgeopt.low_rank(low_rank_model(), rank=4, energy=0.9)
    with pytest.raises(ValueError, match="speedup must be positive"):
        edgeopt.low_rank(low_rank_model(), speedup=0.0)


@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 0, False), ((1, 2), (2, 1), True)])
def test_conv_factorizations_are_exact_at_full_rank(stride, padding, bias):
    from edgeopt.low_rank import separable, tucker2

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, (3, 5), stride=stride, padding=padding, bias=bias)
    x = torch.randn(2, 6, 13, 17)
    with torch.no_grad():
        ref = conv(x)
        torch.testing.assert_close(tucker2(conv, 6, 10)(x), ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(separable(conv, 18)(x), ref, rtol=0, atol=1e-5)  # min(6*3, 10*5)


def test_conv_pass_report_and_fraction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.Conv2d(32, 8, 1)).eval()
    x = torch.randn(1, 16, 12, 12)
    model, report = edgeopt.low_rank(model, rank=0.25, conv="tucker2", example_input=x, measure=False)
    names = [e.name for e in report]
    assert names == ["0", "2"]  # 1x1 convs are not factorized
    e = report[1]
    assert e.converted and e.rank == 8 and isinstance(model[2], nn.Sequential)
    assert e.macs_before == 32 * 32 * 9 * 144 and e.macs == 144 * (32 * 8 + 8 * 8 * 9 + 8 * 32)
    assert 0 < e.rel_error < 1
    with pytest.raises(ValueError, match="needs data"):
        edgeopt.low_rank(model, rank=0.5, conv="separable")
    with pytest.raises(ValueError, match="conv must be"):
        edgeopt.low_rank(model, rank=0.5, conv="cp")


def test_tucker2_report_full_rank_bounds_the_chosen_rank():
    # a 1-channel stem: the input mode has rank 1, the output mode up to min(Cout, 9)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1)).eval()
    _, report = edgeopt.low_rank(model, rank=0.5, conv="tucker2", example_input=torch.randn(1, 1, 8, 8),
                                 measure=False)
    stem, second = report
    assert (stem.rank, stem.full_rank) == (4, 9)  # r_out = round(0.5 * 9), r_in = 1
    assert (second.rank, second.full_rank) == (16, 32) and all(e.rank <= e.full_rank for e in report)


def test_tucker2_factors_quantize_to_int8_convs():
    """Composition with edgeopt.quantize: the convs low_rank produces are plain Conv2d, so edgeopt.quantize
    turns each of them (and the untouched layers) into QuantConv2d."""
    import edgeopt
    from edgeopt.nn import QuantConv2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    x = torch.randn(2, 3, 12, 12)
    factorized, report = edgeopt.low_rank(model, rank=0.5, conv="tucker2", example_input=x, measure=False)
    assert any(r.converted for r in report)
    convs = [name for name, m in factorized.named_modules() if isinstance(m, nn.Conv2d)]
    qmodel, qreport = edgeopt.quantize(factorized, [x], progress=False, measure=False)
    assert qreport.traced  # the LowRankLinear head is called as a leaf, not traced into
    for name in convs:  # every factor is int8 unless it is one of the too-short reductions kept float
        assert qreport[name].converted or "too few" in qreport[name].reason
    assert sum(isinstance(m, QuantConv2d) for m in qmodel.modules()) >= 4
    with torch.no_grad():
        ref, out = factorized(x), qmodel(x)
    assert float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean())) > 25

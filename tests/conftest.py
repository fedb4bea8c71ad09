import numpy as np
import pytest

from edgeopt._native import _C

# Every ISA path this CPU can run; the reference path always.
ISAS = ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else [])


@pytest.fixture(params=ISAS)
def isa(request):
    previous = _C.isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

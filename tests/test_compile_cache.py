"""torch.compile's caches must not hand one edgeopt build's compiled code to another.

Inductor keys a graph by its ops' names and schemas, not by what edgeopt's ops and fakes do; before the build
tag, a graph compiled where ATen sees AVX-512 was reused where it sees AVX2 only (the avx2only shim), and code
compiled against an older build after an upgrade (QuantLinear + GELU: outputs off by 1.8, then "double free or
corruption")."""
import os
import subprocess
import sys
import textwrap

import torch

from edgeopt import ops

COMPILE_ONCE = textwrap.dedent("""
    import sys
    import torch
    from torch._dynamo.utils import counters
    from torch import nn
    from edgeopt.nn import QuantLinear
    torch.compiler.config.cache_key_tag = sys.argv[1]   # stands for another edgeopt build
    torch.manual_seed(0)
    model = nn.Sequential(QuantLinear.from_float(nn.Linear(16, 8)), nn.GELU()).eval()
    x = torch.randn(2, 16)
    with torch.no_grad():
        out = torch.compile(model, fullgraph=True)(x)
        torch.testing.assert_close(out, model(x), rtol=0, atol=1e-5)
    print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
""")


def test_every_compile_cache_key_carries_this_build():
    tag = f"edgeopt-{ops.build_fingerprint()}-{torch.backends.cpu.get_cpu_capability().lower()}"
    assert tag in torch.compiler.config.cache_key_tag.split("|")
    saved = torch.compiler.config.cache_key_tag
    try:
        torch.compiler.config.cache_key_tag = "users-own"
        ops._tag_compile_caches()
        assert torch.compiler.config.cache_key_tag == f"users-own|{tag}"  # the user's tag is kept
        ops._tag_compile_caches()
        assert torch.compiler.config.cache_key_tag == f"users-own|{tag}"  # and ours added once
    finally:
        torch.compiler.config.cache_key_tag = saved


def test_another_build_does_not_reuse_the_compiled_graph(tmp_path):
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))

    def hits_and_misses(tag):
        run = subprocess.run([sys.executable, "-c", COMPILE_ONCE, tag], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return tuple(int(v) for v in run.stdout.split()[-2:])

    assert hits_and_misses("edgeopt-build-a") == (0, 1)
    assert hits_and_misses("edgeopt-build-a") == (1, 0)  # the cache works within one build
    assert hits_and_misses("edgeopt-build-b") == (0, 1)  # a different build compiles afresh

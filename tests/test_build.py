"""The built extension as shipped: no AVX-512, ISA override, info command, threads."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

import edgeopt
from edgeopt._native import _C


def test_extension_has_no_avx512_instructions():
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not installed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", _C.__file__], capture_output=True, text=True,
                          check=True).stdout
    assert "vpmaddubsw" in text, "the AVX2 kernels are missing from the extension"
    zmm = [line for line in text.splitlines() if "%zmm" in line or "{%k" in line]
    assert not zmm, f"AVX-512 instructions in the extension, e.g. {zmm[:3]}"


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_isa_env_override():
    r = run_python("from edgeopt._native import _C; print(_C.isa())", EDGEOPT_ISA="ref")
    assert r.returncode == 0 and r.stdout.strip() == "ref", r.stderr
    r = run_python("from edgeopt._native import _C; print(_C.isa())", EDGEOPT_ISA="sse9")
    assert r.returncode != 0 and "unknown ISA 'sse9'" in r.stderr


def test_set_isa_refuses_unsupported_paths():
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("avx512")
    if not _C.cpu_info()["avx2"]:
        with pytest.raises(RuntimeError, match="lacks AVX2"):
            _C.set_isa("avx2")


def test_info_command_reports_the_path():
    r = subprocess.run([sys.executable, "-m", "edgeopt", "info"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "edgeopt_isa" in r.stdout and _C.isa() in r.stdout
    assert f"edgeopt_threads        {torch.get_num_threads()}" in r.stdout


def test_threads_follow_torch_unless_set():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert edgeopt.get_num_threads() == 1
        edgeopt.set_num_threads(3)
        assert edgeopt.get_num_threads() == 3
        edgeopt.set_num_threads(None)
        assert edgeopt.get_num_threads() == 1
        with pytest.raises(ValueError):
            edgeopt.set_num_threads(0)
    finally:
        torch.set_num_threads(before)
        edgeopt.set_num_threads(None)


def test_single_openmp_runtime_in_a_mixed_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    from edgeopt.nn import QuantLinear

    q = QuantLinear.from_float(torch.nn.Linear(64, 64))
    q(torch.randn(8, 64))
    torch.randn(64, 64) @ torch.randn(64, 64)
    np.ones((64, 64)) @ np.ones((64, 64))
    openmp = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "openmp"]
    assert len({os.path.realpath(p["filepath"]) for p in openmp}) <= 1, openmp


def test_extension_links_no_openmp_runtime():
    # edgeopt threads with its own pool; a second libgomp beside torch's would spin against it.
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not installed")
    needed = subprocess.run([readelf, "-d", _C.__file__], capture_output=True, text=True, check=True).stdout
    assert "NEEDED" in needed
    assert "gomp" not in needed and "libomp" not in needed and "iomp" not in needed, needed


def test_installed_package_finds_data_from_the_repository_root(tmp_path, monkeypatch):
    # A non-editable install lives in site-packages, away from the repository: run from the repository
    # root (as README.md does), the data root is the working directory's ../shared/data.
    from edgeopt.data import paths

    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.setattr(paths, "DEFAULT_DATA_ROOT", tmp_path / "site-packages" / "shared" / "data")
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path / "repo")
    assert paths.data_root() == tmp_path / "shared" / "data"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(paths.DataNotFoundError, match="repository default"):
        paths.data_root()


def test_importing_edgeopt_first_shortens_torchs_openmp_spin():
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    code = "import {first}, {second}, os; print(os.environ.get('GOMP_SPINCOUNT'))"
    r = subprocess.run([sys.executable, "-c", code.format(first="edgeopt", second="torch")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "10000", r.stderr
    r = subprocess.run([sys.executable, "-c", code.format(first="torch", second="edgeopt")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stderr  # too late to matter: left alone
    r = subprocess.run([sys.executable, "-c", code.format(first="edgeopt", second="torch")], capture_output=True,
                       text=True, env=dict(env, GOMP_SPINCOUNT="123"))
    assert r.stdout.strip() == "123"  # the user's own setting wins

"""Nothing written is lost: a run killed in the middle of writing a file leaves the previous file (or none) under
the real name, and a rerun resumes from what finished. Each kill is a real SIGKILL of a child process that is
stopped inside the write (its torch.save has written part of the file)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from edgeopt.files import atomic_file, atomic_save, atomic_write

# Child preamble: torch.save writes half of its bytes, says so on stdout and waits to be killed.
STALL_IN_SAVE = textwrap.dedent("""
    import io, sys, time, torch
    _real_save = torch.save
    def stalled_save(obj, f, *args, **kwargs):
        if STALL_AT is not None and stalled_save.calls == STALL_AT:
            buf = io.BytesIO()
            _real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            print("MID-WRITE", flush=True)
            time.sleep(600)
        stalled_save.calls += 1
        return _real_save(obj, f, *args, **kwargs)
    stalled_save.calls = 0
    torch.save = stalled_save
""")


def run_until_mid_write(tmp_path, body: str, stall_at: int | None) -> subprocess.CompletedProcess | None:
    """Runs `body` in a child; with stall_at (the index of the torch.save call to stall) SIGKILLs it mid-write.
    Returns the finished process when stall_at is None."""
    script = tmp_path / "child.py"
    script.write_text(f"STALL_AT = {stall_at!r}\n" + STALL_IN_SAVE + textwrap.dedent(body))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    if stall_at is None:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        return subprocess.CompletedProcess(child.args, 0, out, err)
    try:
        for line in child.stdout:
            if line.strip() == "MID-WRITE":
                break
        else:
            pytest.fail(f"the child ended before the stalled write: {child.stderr.read()}")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return None


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_killed_checkpoint_write_keeps_the_old_checkpoint(tmp_path):
    body = """
        from edgeopt.files import atomic_save
        atomic_save({"version": 1, "w": torch.arange(100000)}, "model.pt")
        atomic_save({"version": 2, "w": torch.arange(100000) * 2}, "model.pt")
    """
    run_until_mid_write(tmp_path, body, stall_at=1)
    saved = torch.load(tmp_path / "model.pt")
    assert saved["version"] == 1 and torch.equal(saved["w"], torch.arange(100000))
    stale = leftovers(tmp_path)
    assert all(name.endswith(".tmp") for name in stale) and stale, stale  # the half file has a name nobody reads
    run_until_mid_write(tmp_path, body, stall_at=None)
    assert torch.load(tmp_path / "model.pt")["version"] == 2


def test_killed_first_write_leaves_no_file(tmp_path):
    run_until_mid_write(tmp_path, """
        from edgeopt.models.checkpoint import save_checkpoint
        save_checkpoint("ckpt.pt", torch.nn.Linear(300, 300), "linear")
    """, stall_at=0)
    assert not (tmp_path / "ckpt.pt").exists()


def test_training_killed_while_saving_its_checkpoint_resumes(tmp_path):
    """fit(checkpoint=...) saves after every epoch: killed while saving epoch 2, the file still holds epoch 1,
    and the rerun continues from epoch 2 to the same weights as a run never killed."""
    body = """
        import sys
        from torch import nn
        from torch.utils.data import TensorDataset
        from edgeopt.training.loop import FitConfig, fit
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, 1, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(16, 3))
        fit(model, data, None, FitConfig(epochs=3, batch_size=16, lr=0.01, seed=0, select_best=False),
            progress=False, checkpoint=sys.argv[1] if len(sys.argv) > 1 else "train.ckpt")
        torch.save = _real_save
        torch.save(model.state_dict(), "final.pt")
    """
    run_until_mid_write(tmp_path, body, stall_at=1)  # the second epoch's checkpoint
    saved = torch.load(tmp_path / "train.ckpt", weights_only=False)
    assert saved["epoch"] == 1
    resumed = run_until_mid_write(tmp_path, body, stall_at=None)
    resumed_weights = torch.load(tmp_path / "final.pt")
    assert torch.load(tmp_path / "train.ckpt", weights_only=False)["epoch"] == 3
    (tmp_path / "train.ckpt").unlink()
    (tmp_path / "final.pt").unlink()
    run_until_mid_write(tmp_path, body, stall_at=None)  # never killed
    for name, value in torch.load(tmp_path / "final.pt").items():
        assert torch.equal(value, resumed_weights[name]), name
    assert resumed.returncode == 0


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(target, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(Exception):  # noqa: B017  (pickle's error type varies: the point is what is left)
        atomic_save(lambda: None, target)  # unpicklable
    assert target.read_text() == "old" and leftovers(tmp_path) == []
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

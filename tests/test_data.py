"""Dataset loaders on the shared data: splits, labels, both RAVDESS layouts, and errors that name files."""
import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from edgeopt.data import (
    DATA_ENV_VAR, RAVDESS_EMOTIONS, Cifar10, DataCorruptError, DataNotFoundError, Fsdd, Mnist, Ravdess,
    data_root, read_audio,
)
from edgeopt.data.paths import DEFAULT_DATA_ROOT

pytestmark = pytest.mark.skipif(not DEFAULT_DATA_ROOT.is_dir(), reason="shared data not beside the repository")
RAVDESS_DIR = DEFAULT_DATA_ROOT / "ravdess"


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert data_root() == DEFAULT_DATA_ROOT
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(DEFAULT_DATA_ROOT) == DEFAULT_DATA_ROOT  # the argument wins over the variable
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="nope.*EDGEOPT_DATA"):
        data_root()
    with pytest.raises(DataNotFoundError, match="mnist"):
        Mnist(root=tmp_path)


def test_ravdess_splits_are_actor_disjoint_and_balanced():
    parts = {s: Ravdess(split=s) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in parts.items()} == {"train": 1080, "val": 120, "test": 240}
    actors = {s: {c.speaker for c in d.clips} for s, d in parts.items()}
    assert actors["test"] == {"21", "22", "23", "24"} and actors["val"] == {"19", "20"}
    assert not actors["train"] & (actors["val"] | actors["test"])
    counts = collections.Counter(parts["test"].targets)
    assert counts == {0: 16, **{k: 32 for k in range(1, 8)}}
    assert Ravdess.classes == RAVDESS_EMOTIONS and len(Ravdess(split="all")) == 1440
    assert len(Ravdess(actors=[1, 2])) == 120


def test_ravdess_item_is_16k_float_waveform_with_label_from_name():
    d = Ravdess(split="test")
    waveform, label = d[5]
    assert waveform.dtype == torch.float32 and waveform.dim() == 1 and waveform.abs().max() <= 1
    assert waveform.shape[0] == d.clips[5].num_samples and 2.9 * 16000 < waveform.shape[0] < 5.3 * 16000
    assert label == int(d.clips[5].path.name.split("-")[2]) - 1


def test_ravdess_reads_original_release_layout(tmp_path):
    """A user's own copy: Actor_XX/*.wav at 48 kHz, labels only from the file names, song files ignored."""
    source = RAVDESS_DIR / "Actor_03" / "03-01-05-02-01-01-03.flac"  # angry, actor 3
    samples, rate = sf.read(source, dtype="float64")
    upsampled = np.repeat(samples, 3)  # crude 48 kHz version; the loader must bring it back to 16 kHz
    (tmp_path / "Actor_03").mkdir()
    (tmp_path / "Actor_22").mkdir()
    sf.write(tmp_path / "Actor_03" / "03-01-05-02-01-01-03.wav", upsampled, 48000, subtype="PCM_16")
    sf.write(tmp_path / "Actor_22" / "03-01-02-01-01-01-22.wav", samples, 16000, subtype="PCM_16")
    sf.write(tmp_path / "Actor_22" / "03-02-02-01-01-01-22.wav", samples, 16000, subtype="PCM_16")  # song
    train = Ravdess(root=tmp_path, split="train")
    assert train.layout == "release" and len(train) == 1
    waveform, label = train[0]
    assert RAVDESS_EMOTIONS[label] == "angry" and waveform.shape[0] == len(samples)
    # the crude upsampling is not band-limited, so only the envelope is compared
    assert np.corrcoef(np.abs(waveform.numpy()), np.abs(samples))[0, 1] > 0.9
    test = Ravdess(root=tmp_path, split="test")
    assert [(c.speaker, c.label) for c in test.clips] == [("22", 1)]
    np.testing.assert_allclose(test[0][0].numpy(), samples, atol=1 / 32768)


def test_ravdess_bad_file_name_is_named(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "hello.wav").write_bytes(b"")
    with pytest.raises(DataCorruptError, match="hello.wav"):
        Ravdess(root=tmp_path)


def _copy_metadata_with(tmp_path, n_rows=2):
    lines = (RAVDESS_DIR / "metadata.csv").read_text().splitlines()[: n_rows + 1]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return [line.split(",")[0] for line in lines[1:]]


def test_missing_audio_file_error_names_the_file(tmp_path):
    paths = _copy_metadata_with(tmp_path)
    d = Ravdess(root=tmp_path, split="train")
    with pytest.raises(DataNotFoundError, match=paths[0].split("/")[1]):
        d[0]


def test_corrupt_and_truncated_audio_errors_name_the_file(tmp_path):
    paths = _copy_metadata_with(tmp_path)
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / paths[0]).write_bytes(b"fLaC-but-not-really" * 10)
    samples, rate = sf.read(RAVDESS_DIR / paths[1], dtype="int16")
    sf.write(tmp_path / paths[1], samples[:1000], rate)
    d = Ravdess(root=tmp_path, split="train")
    with pytest.raises(DataCorruptError, match=paths[0].split("/")[1]):
        d[0]
    with pytest.raises(DataCorruptError, match=f"{paths[1].split('/')[1]}.*1000 samples"):
        d[1]
    with pytest.raises(DataNotFoundError, match="nothing.flac"):
        read_audio(tmp_path / "nothing.flac")


def test_fsdd_split_schemes():
    sizes = {(scheme, split): len(Fsdd(split=split, scheme=scheme))
             for scheme in ("official", "speaker") for split in ("train", "val", "test")}
    assert sizes == {("official", "train"): 2400, ("official", "val"): 300, ("official", "test"): 300,
                     ("speaker", "train"): 2000, ("speaker", "val"): 500, ("speaker", "test"): 500}
    test = Fsdd(split="test")
    assert collections.Counter(test.targets) == {d: 30 for d in range(10)}
    assert all(c.path.name.split("_")[2].split(".")[0] in "01234" for c in test.clips)
    assert {c.speaker for c in Fsdd(split="test", scheme="speaker").clips} == {"theo"}
    waveform, label = test[0]
    assert waveform.shape[0] == test.clips[0].num_samples and label == int(test.clips[0].path.name[0])
    assert Fsdd(split="test", sample_rate=16000)[0][0].shape[0] == 2 * waveform.shape[0]
    with pytest.raises(ValueError, match="scheme"):
        Fsdd(scheme="random")


def test_mnist_shapes_and_splits():
    sizes = {s: len(Mnist(split=s)) for s in ("train", "val", "train+val", "test")}
    assert sizes == {"train": 55000, "val": 5000, "train+val": 60000, "test": 10000}
    test = Mnist(split="test")
    image, label = test[0]
    assert image.shape == (1, 28, 28) and label == 7  # the first MNIST test digit is a 7
    assert abs(float(test.images.mean())) < 0.1  # normalised
    assert np.bincount(test.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_test_and_decoded_train():
    test = Cifar10(split="test")
    assert len(test) == 10000 and test[0][0].shape == (3, 32, 32)
    assert np.bincount(test.targets).tolist() == [1000] * 10
    val = Cifar10(split="val")
    assert len(val) == 5000 and np.bincount(val.targets).tolist() == [500] * 10
    # the data README's statistics of the decoded training set: per-channel means 0.4913, 0.4821, 0.4465
    full = Cifar10(split="train+val")
    mean = (full.images * torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
            + torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)).mean(dim=(0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=2e-4, rtol=0)
    torch.manual_seed(0)
    augmented = Cifar10(split="val", augment=True)
    assert augmented[0][0].shape == (3, 32, 32) and not torch.equal(augmented[0][0], augmented[0][0])


def test_corrupt_npz_error_names_the_file(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataCorruptError, match="mnist.npz"):
        Mnist(root=tmp_path)
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataCorruptError, match="mnist.npz.*y_train"):
        Mnist(root=tmp_path)

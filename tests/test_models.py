"""Model structure (torchvision/timm-compatible names and sizes), the MAC counter and checkpoints."""
import pytest
import torch
from torch import nn

from edgeopt.models import (
    CheckpointError, PretrainedNotFoundError, count_macs, count_params, get_model, list_models, load_checkpoint,
    load_pretrained, save_checkpoint,
)

# parameter counts of torchvision's resnet18 / resnet50 / mobilenet_v2 and timm's vit_tiny_patch16_224
PUBLISHED_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872, "vit_tiny": 5_717_416}
# published MACs: ResNet-18 1.82 G, ResNet-50 4.09 G (conv + fc), MobileNetV2 300 M, ViT-Ti/16 1.26 G
PUBLISHED_MACS = {"resnet18": 1.814e9, "resnet50": 4.089e9, "mobilenet_v2": 300.8e6, "vit_tiny": 1.254e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_imagenet_models_match_published_sizes(name):
    model = get_model(name)
    assert count_params(model) == PUBLISHED_PARAMS[name]
    assert count_macs(model, (3, 224, 224)) == pytest.approx(PUBLISHED_MACS[name], rel=2e-3)


def test_state_dict_names_follow_torchvision():
    r18 = get_model("resnet18").state_dict()
    assert len(r18) == 122
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight",
            "fc.weight", "fc.bias"} <= set(r18)
    assert r18["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    r50 = get_model("resnet50").state_dict()
    assert r50["layer1.0.conv3.weight"].shape == (256, 64, 1, 1) and r50["fc.weight"].shape == (1000, 2048)
    mb = get_model("mobilenet_v2").state_dict()
    assert mb["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert mb["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # expand ratio 1: depthwise first
    assert mb["features.1.conv.1.weight"].shape == (16, 32, 1, 1)
    assert mb["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert mb["features.2.conv.3.running_var"].shape == (24,)
    assert mb["features.18.0.weight"].shape == (1280, 320, 1, 1) and mb["classifier.1.weight"].shape == (1000, 1280)
    vit = get_model("vit_tiny").state_dict()
    assert vit["pos_embed"].shape == (1, 197, 192) and vit["patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    assert vit["blocks.11.attn.qkv.weight"].shape == (576, 192) and vit["blocks.0.mlp.fc2.weight"].shape == (192, 768)


@pytest.mark.parametrize(
    "name, shape, classes",
    [("resnet18_cifar", (3, 32, 32), 10), ("resnet50_cifar", (3, 32, 32), 10), ("mobilenet_v2_cifar", (3, 32, 32), 10),
     ("resnet10_cifar_slim", (3, 32, 32), 10), ("vit_tiny_cifar", (3, 32, 32), 10), ("vgg_audio", (1, 64, 128), 8),
     ("vgg_audio_small", (1, 64, 128), 8), ("dscnn", (1, 40, 100), 10), ("dscnn_small", (1, 40, 100), 10)],
)
def test_small_models_forward_and_backward(name, shape, classes):
    torch.manual_seed(0)
    model = get_model(name)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, classes) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cifar_variants_keep_resolution():
    # the stem keeps 32x32 (stride 1, no max-pool), so layer4 sees 4x4 instead of 1x1
    assert count_macs(get_model("resnet18_cifar"), (3, 32, 32)) == pytest.approx(555.4e6, rel=1e-3)
    assert count_macs(get_model("mobilenet_v2_cifar"), (3, 32, 32)) > 10 * count_macs(get_model("mobilenet_v2"), (3, 32, 32))


def test_students_have_at_most_a_quarter_of_teacher_macs():
    assert count_macs(get_model("vgg_audio_small"), (1, 64, 128)) * 4 <= count_macs(get_model("vgg_audio"), (1, 64, 128))
    assert count_macs(get_model("dscnn_small"), (1, 40, 100)) * 4 <= count_macs(get_model("dscnn"), (1, 40, 100))


def test_count_macs_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
    assert count_macs(conv, (3, 16, 16)) == 8 * 8 * 8 * 3 * 9
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(depthwise, (8, 10, 10)) == 8 * 100 * 9
    mlp = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    assert count_macs(mlp, (10,)) == 10 * 20 + 20 * 5
    vit = get_model("vit_tiny", img_size=32, patch_size=8, depth=1, embed_dim=16, num_heads=2, num_classes=3)
    n = 17  # 16 patches + class token
    expected = 16 * 16 * 3 * 64 + n * 16 * 48 + 2 * n * n * 16 + n * 16 * 16 + 2 * n * 16 * 64 + 16 * 3
    assert count_macs(vit, (3, 32, 32)) == expected
    model = get_model("resnet18_cifar")
    model.train()
    count_macs(model, (3, 32, 32))
    assert model.training  # the counter must not leave the model in eval mode


def test_registry_and_input_errors():
    assert {"resnet18", "resnet50", "mobilenet_v2", "vgg_audio", "dscnn", "vit_tiny"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        get_model("resnet19")
    with pytest.raises(ValueError, match="224x224"):
        get_model("vit_tiny", depth=1)(torch.zeros(1, 3, 32, 32))
    assert get_model("resnet18", num_classes=7).fc.out_features == 7


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = get_model("dscnn_small", num_classes=5)
    model(torch.randn(4, 1, 40, 100))  # move BN running stats away from their init
    path = save_checkpoint(tmp_path / "m.pt", model.eval(), "dscnn_small", {"num_classes": 5}, accuracy=0.5, command="x")
    loaded, meta = load_checkpoint(path)
    assert not loaded.training and meta["accuracy"] == 0.5 and meta["model_name"] == "dscnn_small"
    x = torch.randn(3, 1, 40, 100)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_missing_pretrained_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    with pytest.raises(PretrainedNotFoundError, match="edgeopt reproduce no_such_model"):
        load_pretrained("no_such_model")

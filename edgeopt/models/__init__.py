"""Models defined in the project, by registry name.

Image: ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2`` (224x224, torchvision state_dict names)
and their CIFAR-size variants ``resnet18_cifar``, ``resnet50_cifar``, ``mobilenet_v2_cifar``, plus the
small CIFAR-10 reference ``resnet10_cifar_slim``. Audio: ``vgg_audio`` / ``vgg_audio_small`` (speech
emotion, 1x64x128 log-mel) and ``dscnn_large`` / ``dscnn`` / ``dscnn_small`` (spoken digits). Transformer: ``vit_tiny``
(3x224x224, timm names) and ``vit_tiny_cifar``.
"""
from edgeopt.models import audio, mobilenetv2, resnet, vit  # noqa: F401  (registers the models)
from edgeopt.models.audio import DSCNN, VggAudio
from edgeopt.models.checkpoint import (
    PACKAGE_CHECKPOINTS, CheckpointError, PretrainedNotFoundError, cache_dir, load_checkpoint, load_pretrained, pretrained_path,
    save_checkpoint,
)
from edgeopt.models.mobilenetv2 import MobileNetV2
from edgeopt.perf.cost import ModelCost, count_macs, count_params, model_cost
from edgeopt.models.registry import get_model, list_models, register_model
from edgeopt.models.resnet import ResNet
from edgeopt.models.vit import VisionTransformer

__all__ = [
    "CheckpointError", "DSCNN", "MobileNetV2", "ModelCost", "PretrainedNotFoundError", "ResNet", "VggAudio",
    "VisionTransformer", "cache_dir", "count_macs", "count_params", "get_model", "list_models", "load_checkpoint",
    "load_pretrained", "model_cost", "pretrained_path", "register_model", "save_checkpoint",
]

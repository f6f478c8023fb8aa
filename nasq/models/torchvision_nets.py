"""Existing torchvision networks for bit-policy search (JASQ §4.1, Table 1).

``build_torchvision(name, num_classes, input_shape)`` returns the torchvision architecture with the
requested number of classes and input channels. Inputs smaller than 32 pixels (e.g. the 8×8 digits)
get a stride-1 stem without the stem pooling so every stage still has pixels to work on; 32×32 and
larger keep torchvision's architecture as it is. :func:`quantizable_layers` lists the layers whose
weights a bit policy assigns: every ``Conv2d`` and ``Linear``, in module order. Biases and
batch-norm parameters stay float32.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from nasq.errors import CheckpointError, ConfigError, bad_token

log = logging.getLogger(__name__)

MODELS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "squeezenet1_1",
)
SMALL_INPUT = 32  # inputs with a side below this get the stride-1 stem

# name -> (attribute path of the stem conv, attribute path of the stem pooling or None)
_STEM: dict[str, tuple[str, str | None]] = {
    "resnet18": ("conv1", "maxpool"),
    "resnet34": ("conv1", "maxpool"),
    "resnet50": ("conv1", "maxpool"),
    "densenet121": ("features.conv0", "features.pool0"),
    "mobilenet_v2": ("features.0.0", None),
    "mobilenet_v3_large": ("features.0.0", None),
    "squeezenet1_1": ("features.0", "features.2"),
}


def check_model(name: str) -> str:
    """Validate a model name against :data:`MODELS`."""
    if name not in MODELS:
        raise ConfigError(bad_token("model", name, list(MODELS)))
    return name


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, value)


def _replace_stem(net: nn.Module, name: str, in_channels: int, small: bool) -> None:
    conv_path, pool_path = _STEM[name]
    old: nn.Conv2d = net.get_submodule(conv_path)
    kernel, stride, padding = (3, 1, 1) if small else (old.kernel_size, old.stride, old.padding)
    if in_channels == old.in_channels and not small:
        return
    _set(
        net,
        conv_path,
        nn.Conv2d(in_channels, old.out_channels, kernel, stride, padding, bias=old.bias is not None),
    )
    if small and pool_path is not None:
        _set(net, pool_path, nn.Identity())


def build_torchvision(
    name: str, num_classes: int, input_shape: tuple[int, int, int] = (3, 32, 32), weights: str | None = None
) -> nn.Module:
    """Build a torchvision network for ``input_shape`` (C, H, W) and ``num_classes`` (JASQ §4.1).

    Args:
        name: one of :data:`MODELS`.
        num_classes: classifier outputs.
        input_shape: input (C, H, W); C != 3 replaces the stem conv, H or W < 32 makes it stride 1.
        weights: ``"DEFAULT"`` for torchvision's pretrained ImageNet weights (downloaded; needs a
            network connection). The classifier is then replaced when ``num_classes != 1000``.
    """
    import torchvision

    check_model(name)
    c, h, w = input_shape
    small = min(h, w) < SMALL_INPUT
    if weights is None:
        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    else:
        net = _pretrained(name, weights)
        _replace_classifier(net, num_classes)
    if weights is None or c != 3 or small:
        _replace_stem(net, name, c, small)
    return net


def _pretrained(name: str, weights: str) -> nn.Module:
    import torchvision

    try:
        return getattr(torchvision.models, name)(weights=weights)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"unknown torchvision weights {weights!r} for {name} ({exc}); use DEFAULT") from exc
    except Exception as exc:  # no network, or a broken download
        raise CheckpointError(
            f"cannot download torchvision weights {weights!r} for {name} "
            f"({type(exc).__name__}); pass --checkpoint STATE_DICT or --train-epochs E"
        ) from exc


def _replace_classifier(net: nn.Module, num_classes: int) -> None:
    last_name, last = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    if isinstance(last, nn.Linear) and last.out_features != num_classes:
        _set(net, last_name, nn.Linear(last.in_features, num_classes))
    elif isinstance(last, nn.Conv2d) and last.out_channels != num_classes:  # squeezenet's conv classifier
        _set(net, last_name, nn.Conv2d(last.in_channels, num_classes, last.kernel_size))


def quantizable_layers(net: nn.Module) -> list[str]:
    """Names of the ``Conv2d`` / ``Linear`` modules of ``net`` in module order (the bit-policy genes)."""
    return [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def bits_for_layers(net: nn.Module, bits: tuple[int, ...] | list[int]) -> dict[str, int]:
    """``parameter name -> bits`` for each quantizable layer's weight (JASQ §4.1 bit policy)."""
    layers = quantizable_layers(net)
    if len(bits) != len(layers):
        raise ConfigError(
            f"bit policy has {len(bits)} entries but the model has {len(layers)} "
            "quantizable layers; give one bit width per Conv2d/Linear layer"
        )
    return {f"{layer}.weight": int(b) for layer, b in zip(layers, bits)}


def load_state_dict(net: nn.Module, path: str) -> nn.Module:
    """Load a state dict saved by ``torch.save`` into ``net`` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, not a state dict, or does not fit ``net``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path!r} not found; check --checkpoint") from exc
    except Exception as exc:  # pickle errors, zip errors, foreign objects
        raise CheckpointError(
            f"cannot read checkpoint {path!r} ({type(exc).__name__}: {exc}); "
            "pass a state dict saved with torch.save(model.state_dict(), path)"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path!r} holds a {type(state).__name__}, not a state dict; "
            "save it with torch.save(model.state_dict(), path)"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint {path!r} does not fit this model ({first}); "
            "check --model and --dataset against the run that saved it"
        ) from exc
    return net

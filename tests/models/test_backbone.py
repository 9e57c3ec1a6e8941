"""Backbone construction, packaged weights, positional mapping and feature width."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from landmark_tl.data.transforms import geometry_transform, to_uint8_tensor
from landmark_tl.models.backbone import (
    PACKAGED_WEIGHTS,
    create_backbone,
    map_by_position,
    match_state_dict,
)


@pytest.fixture(scope="module")
def packaged_with_classifier():
    return create_backbone("tf_efficientnet_lite0", weights="package", keep_classifier=True)


def test_packaged_weights_map_every_tensor_by_position():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = PACKAGED_WEIGHTS["tf_efficientnet_lite0"]()
    mapped = match_state_dict(source, model)
    assert list(mapped) == list(model.state_dict())
    assert len(mapped) == len(source) == 296
    missing, unexpected = model.load_state_dict(mapped, strict=True)
    assert not missing and not unexpected
    # the packaged file names tensors differently: mapping really was by position
    assert next(iter(source)) == "_conv_stem.weight"
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("chelsea", set(range(281, 286))),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
        ("coffee", {967, 968, 504}),
    ],  # espresso, cup, coffee mug
)
def test_packaged_weights_classify_real_photos(packaged_with_classifier, photo, expected):
    backbone = packaged_with_classifier.eval()
    image = Image.fromarray(getattr(skdata, photo)())
    x = to_uint8_tensor(geometry_transform(backbone.preprocessing)(image))[None]
    with torch.no_grad():
        top = backbone(x).argmax(-1).item()
    assert top in expected


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("tf_efficientnet_lite0", 1280),
        pytest.param("vgg16", 4096, marks=pytest.mark.slow),  # 138 M parameters to build
        ("resnet18", 512),
    ],
)
def test_feature_width_comes_from_the_model(name, width):
    backbone = create_backbone(name, weights="none", input_size=(3, 32, 32))
    assert backbone.num_features == width
    with torch.no_grad():
        out = backbone(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert out.shape == (2, width)


def test_preprocessing_from_timm_config_and_overrides():
    default = create_backbone("tf_efficientnet_lite0", weights="none").preprocessing
    assert default.input_size == (3, 224, 224)
    assert default.mean == (0.5, 0.5, 0.5) and default.interpolation == "bicubic"
    vgg = create_backbone("vgg16", weights="none", input_size=(3, 32, 32)).preprocessing
    assert vgg.mean == pytest.approx((0.485, 0.456, 0.406))
    custom = create_backbone(
        "resnet18",
        weights="none",
        input_size=(3, 96, 96),
        mean=(0.1, 0.2, 0.3),
        std=(1.0, 1.0, 1.0),
    ).preprocessing
    assert custom.input_size == (3, 96, 96) and custom.mean == (0.1, 0.2, 0.3)


def test_freeze_all_keeps_backbone_in_eval_mode_without_gradients():
    backbone = create_backbone("resnet18", weights="none", freeze="all")
    backbone.train()
    assert not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())
    trainable = create_backbone("resnet18", weights="none", freeze="none").train()
    assert trainable.model.training
    assert all(p.requires_grad for p in trainable.parameters())


def test_a_frozen_backbone_infers_in_channels_last_with_the_same_features():
    nchw = create_backbone("resnet18", weights="none", channels_last=False)
    nhwc = create_backbone("resnet18", weights="none")  # frozen: NHWC unless told otherwise
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.channels_last and not nchw.channels_last
    conv = nhwc.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(nhwc(images), nchw(images), atol=1e-5)
    trainable = {"weights": "none", "freeze": "none"}
    assert not create_backbone("resnet18", **trainable).channels_last  # training: NCHW
    assert create_backbone("resnet18", **trainable, channels_last=True).channels_last


def test_normalisation_uses_model_mean_and_std():
    backbone = create_backbone("resnet18", weights="none", mean=(0.5,) * 3, std=(0.25,) * 3)
    seen = {}
    backbone.model.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        backbone(torch.full((1, 3, 8, 8), 255, dtype=torch.uint8))
    assert torch.allclose(seen["x"], torch.full((1, 3, 8, 8), 2.0))  # (1 - 0.5) / 0.25


def test_position_mapping_refuses_a_shape_mismatch():
    target = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4)}
    source = {"x": torch.zeros(4, 3), "y": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"tensor #1 y has shape \(5,\).*a.bias expects \(4,\)"):
        map_by_position(source, target)
    with pytest.raises(ValueError, match="source has 1 tensors, the model has 2"):
        map_by_position({"x": torch.zeros(4, 3)}, target)


def test_weights_file_loads_by_name_and_by_position(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    by_name = tmp_path / "resnet.pth"
    torch.save(reference.state_dict(), by_name)
    renamed = tmp_path / "renamed.pth"
    torch.save({f"layer_{i}": v for i, v in enumerate(reference.state_dict().values())}, renamed)
    x = torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8)
    outputs = []
    for path in (by_name, renamed):
        backbone = create_backbone("resnet18", weights="file", weights_file=path).eval()
        with torch.no_grad():
            outputs.append(backbone(x))
    assert torch.allclose(outputs[0], outputs[1])


def test_bad_weight_requests_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="weights=package has weights for"):
        create_backbone("resnet18", weights="package")
    with pytest.raises(ValueError, match="weights_file=PATH"):
        create_backbone("resnet18", weights="file")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone("resnet18", weights="file", weights_file=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="not a timm model"):
        create_backbone("no_such_net", weights="none")


def test_weights_file_of_another_architecture_is_refused_listing_keys(tmp_path):
    import timm

    path = tmp_path / "resnet34.safetensors"
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet34", pretrained=False).state_dict(), str(path))
    with pytest.raises(ValueError) as info:
        create_backbone("resnet18", weights="file", weights_file=path)
    message = str(info.value)
    assert "is not a 'resnet18' state dict" in message
    assert "source has" in message and "first that differ" in message


def test_weights_file_with_another_classifier_size_loads(tmp_path):
    import timm

    finetuned = timm.create_model("resnet18", pretrained=False, num_classes=30)
    path = tmp_path / "finetuned.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in finetuned.state_dict().items()}}, path)
    backbone = create_backbone("resnet18", weights="file", weights_file=path)
    assert torch.equal(backbone.model.conv1.weight, finetuned.conv1.weight)


def test_hub_weights_offline_fail_at_once_naming_the_fixes(monkeypatch):
    import time

    from landmark_tl.models import backbone as backbone_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")  # nothing listens there
    start = time.perf_counter()
    assert not backbone_module.hub_reachable(timeout=2)
    with pytest.raises(RuntimeError) as info:
        create_backbone("efficientnet_b0", weights="hub")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "backbone.weights=file" in message and "backbone=efficientnet_lite0" in message


def test_weights_file_reads_timm_checkpoints_ema_first(tmp_path):
    """timm's reader: a training checkpoint's EMA weights before its ``state_dict``, and
    ``torch.compile``'s ``_orig_mod.`` prefix stripped as DDP's ``module.`` is."""
    import timm

    torch.manual_seed(0)
    raw, ema = (timm.create_model("resnet18", pretrained=False) for _ in range(2))
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {
            "epoch": 3,
            "state_dict": raw.state_dict(),
            "state_dict_ema": {f"_orig_mod.{k}": v for k, v in ema.state_dict().items()},
        },
        path,
    )
    backbone = create_backbone("resnet18", weights="file", weights_file=path)
    assert torch.equal(backbone.model.conv1.weight, ema.conv1.weight)
    assert not torch.equal(backbone.model.conv1.weight, raw.conv1.weight)


def test_unreadable_weights_file_names_the_key(tmp_path):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=rf"backbone.weights_file={path} cannot be read"):
        create_backbone("resnet18", weights="file", weights_file=path)

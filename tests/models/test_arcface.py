"""The cosine-margin head against a hand computation, its bad settings refused naming the
key, and the arcface strategy frozen, fine-tuned and classifying by kNN end to end."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from landmark_tl.core.errors import ConfigError
from landmark_tl.models.heads import CosineMarginHead
from landmark_tl.serving.inference import load_run
from landmark_tl.training.build import build_backbone
from landmark_tl.training.run import train


def _head(**kwargs) -> CosineMarginHead:
    """2-d features, 2 classes with centres e1 and e2 (one per class unless sub-centres)."""
    head = CosineMarginHead(2, 2, scale=2.0, margin=0.5, **kwargs)
    centres = torch.eye(2).repeat_interleave(head.subcenters, dim=0)
    with torch.no_grad():
        head.centres.copy_(centres)
    return head


def test_logits_are_the_scaled_cosines_and_the_margin_adds_to_the_target_angle():
    head = _head()
    angle = 0.3
    x = 5.0 * torch.tensor([[math.cos(angle), math.sin(angle)]])  # the length does not count
    logits = head(x)
    assert logits[0].tolist() == pytest.approx([2 * math.cos(0.3), 2 * math.sin(0.3)])
    for target, theta in ((0, 0.3), (1, math.pi / 2 - 0.3)):
        marked = head.margin_logits(logits, torch.tensor([target]))
        assert marked[0, target].item() == pytest.approx(2 * math.cos(theta + 0.5), abs=1e-5)
        assert marked[0, 1 - target].item() == pytest.approx(logits[0, 1 - target].item())


def test_past_pi_the_target_logit_keeps_falling():
    head = _head()
    x = torch.tensor([[-1.0, 0.05]])  # theta to e1 is about pi - 0.05 > pi - margin
    cos = float(torch.nn.functional.normalize(x)[0, 0])
    marked = head.margin_logits(head(x), torch.tensor([0]))
    assert marked[0, 0].item() == pytest.approx(2 * (cos - 0.5 * math.sin(0.5)), abs=1e-5)
    assert torch.isfinite(marked).all()


def test_sub_centres_take_the_nearest_centre_of_each_class():
    head = _head(subcenters=2)
    with torch.no_grad():
        head.centres[1] = torch.tensor([0.0, -1.0])  # class 0's second centre points down
    logits = head(torch.tensor([[0.0, -1.0]]))
    assert logits[0].tolist() == pytest.approx([2.0, -2.0])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"margin": math.pi / 2}, "margin="),
        ({"margin": -0.1}, "margin="),
        ({"scale": 0.0}, "scale="),
        ({"embedding": 3}, "embedding=3"),
        ({"subcenters": 0}, "subcenters="),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CosineMarginHead(2, 2, **kwargs)


def test_bad_settings_are_refused_at_start_naming_the_key(tiny_config, tmp_path: Path):
    for override, key in (
        ("strategy.margin=2.0", r"strategy.margin=2.0"),
        ("strategy.embedding=100000", r"strategy.embedding=100000"),
        ("strategy.classify=nearest", r"strategy.classify='nearest'"),
    ):
        with pytest.raises(ConfigError, match=key):
            train(tiny_config("strategy=arcface", override), tmp_path / override)


def test_frozen_arcface_with_sub_centres_and_an_embedding(tiny_config, tmp_path: Path):
    config = tiny_config(
        "strategy=arcface",
        "strategy.stages.landmark.epochs=2",
        "strategy.subcenters=2",
        "strategy.embedding=8",
    )
    metrics = train(config, tmp_path / "run")
    assert metrics["hierarchy"]["consistency"] == 1.0
    head = load_run(tmp_path / "run").model.head
    assert head.centres.shape == (4 * 2, 8) and head.project.out_features == 8


def test_arcface_classifying_by_knn_reloads_its_neighbours(tiny_config, tmp_path: Path):
    config = tiny_config(
        "strategy=arcface",
        "strategy.stages.landmark.epochs=2",
        "strategy.classify=knn",
        "strategy.k_grid=[1,3]",
    )
    metrics = train(config, tmp_path / "run")
    model = load_run(tmp_path / "run").model.eval()
    assert len(model.knn.bank) == 12 and int(model.knn.k) in (1, 3)
    by_knn = model.task_logits(torch.randn(3, model.backbone.num_features))["landmark"]
    assert torch.allclose(by_knn.exp().sum(1), torch.ones(3), atol=1e-4)  # vote shares
    assert metrics["hierarchy"]["consistency"] == 1.0


def test_fine_tuned_arcface_trains_the_backbone(tiny_config, tmp_path: Path):
    config = tiny_config(
        "strategy=arcface", "strategy.stages.landmark.epochs=1", "backbone.freeze=none"
    )
    L.seed_everything(config.seed, verbose=False)  # as train() does before its backbone
    before = build_backbone(config).model.state_dict()
    train(config, tmp_path / "run")
    after = load_run(tmp_path / "run").model.backbone.model.state_dict()
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )

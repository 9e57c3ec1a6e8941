"""Each strategy really does what its name says, stage by stage (tiny set, frozen features)."""

from __future__ import annotations

import pytest
import torch

from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.splits import SplitSpec
from landmark_tl.models.backbone import create_backbone
from landmark_tl.models.strategies import FeatureChain, HeadSwap, Hierarchical, MultiOutput
from landmark_tl.models.strategies.stages import StageConfig
from landmark_tl.training.checkpointing import restore_frozen_backbone
from landmark_tl.training.fit import fit_stages

STAGES = {name: StageConfig(epochs=2, lr=1e-2) for name in ("joint", "category", "landmark")}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "log_every_n_steps": 1}


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)  # the same random backbone whatever tests ran before in this process
    return create_backbone("resnet18", weights="none", input_size=(3, 32, 32))


@pytest.fixture(scope="module")
def datamodule(tiny_tree, backbone, tmp_path_factory):
    dm = LandmarkDataModule(
        tiny_tree,
        backbone.preprocessing,
        split=SplitSpec(1, 2),
        batch_size=4,
        num_workers=0,
        feature_encoder=backbone,
        feature_store=FeatureStore(tmp_path_factory.mktemp("features"), "enc"),
    )
    dm.setup("fit")
    return dm


def _snapshots(module):
    """Record the state dict at the start and end of every stage's fit."""
    seen: list[tuple[str, str, dict[str, torch.Tensor]]] = []

    def record(moment):
        state = {
            k: v.detach().clone()
            for k, v in module.state_dict().items()
            if not k.startswith("backbone")
        }
        seen.append((module.stage, moment, state))

    module.on_fit_start = lambda: record("start")
    module.on_fit_end = lambda: record("end")
    return seen


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def _fit(module, datamodule, tmp_path):
    torch.manual_seed(0)
    snapshots = _snapshots(module)
    result = fit_stages(module, datamodule, tmp_path, **TRAINER)
    return result, snapshots


@pytest.mark.parametrize("first", ["category", "landmark"])
def test_head_swap_keeps_the_trunk_and_trains_only_the_new_head(
    first, backbone, datamodule, tmp_path
):
    torch.manual_seed(0)  # the heads' init, whatever tests ran before in this process
    module = HeadSwap(backbone, datamodule.hierarchy, STAGES, first=first, hidden=[16])
    second = "landmark" if first == "category" else "category"
    result, snaps = _fit(module, datamodule, tmp_path)
    assert [s.name for s in result.stages] == [first, second]
    assert [s.tasks for s in result.stages] == [(first,), (second,)]
    best_path = tmp_path / result.stages[0].best_checkpoint
    best_stage1 = torch.load(best_path, weights_only=False)["state_dict"]
    (_, _, start2), (_, _, end2) = snaps[2][0:3], snaps[3][0:3]
    for key, value in start2.items():
        if key.startswith("net.trunk"):
            assert torch.equal(value, best_stage1[key]), key
    assert _changed(start2, end2) == {f"net.heads.{second}.weight", f"net.heads.{second}.bias"}
    assert set(result.task_scores()) == {"category", "landmark"}
    assert result.task_scores()[first]["stage"] == first


def test_head_swap_can_also_train_the_trunk_in_stage_2(backbone, datamodule, tmp_path):
    module = HeadSwap(
        backbone,
        datamodule.hierarchy,
        STAGES,
        first="landmark",
        train_in_stage2=["head", "trunk"],
        hidden=[16],
    )
    _, snaps = _fit(module, datamodule, tmp_path)
    changed = _changed(snaps[2][2], snaps[3][2])
    assert {"net.trunk.0.weight", "net.heads.category.weight"} <= changed
    assert not any(k.startswith("net.heads.landmark") for k in changed)


def test_head_swap_refuses_stage2_parts_without_the_head(backbone, datamodule):
    with pytest.raises(ValueError, match="train_in_stage2"):
        HeadSwap(backbone, datamodule.hierarchy, STAGES, train_in_stage2=["trunk"])
    with pytest.raises(ValueError, match="^first='species'"):  # its own argument names
        HeadSwap(backbone, datamodule.hierarchy, STAGES, first="species")


@pytest.mark.parametrize("first", ["category", "landmark"])
def test_feature_chain_freezes_model_a_and_widens_model_b(first, backbone, datamodule, tmp_path):
    module = FeatureChain(backbone, datamodule.hierarchy, STAGES, first=first, hidden=[16])
    n_first = module.num_classes[first]
    assert module.model_b.trunk[0].in_features == backbone.num_features + n_first
    result, snaps = _fit(module, datamodule, tmp_path)
    assert [s.name for s in result.stages] == [
        first,
        "landmark" if first == "category" else "category",
    ]
    changed = _changed(snaps[2][2], snaps[3][2])
    assert changed and all(k.startswith("model_b.") for k in changed)
    assert not any(k.startswith("model_b.") for k in _changed(snaps[0][2], snaps[1][2]))


def test_feature_chain_stage2_sees_model_a_in_eval_mode(backbone, datamodule):
    module = FeatureChain(
        backbone, datamodule.hierarchy, STAGES, first="landmark", hidden=[16], dropout=0.5
    )
    module.begin_stage("category")
    module.train()
    assert module.model_b.training and not module.model_a.training
    x = torch.randn(4, backbone.num_features)
    assert torch.equal(module.model_a(x)["landmark"], module.model_a(x)["landmark"])


def test_multi_output_trains_both_heads_in_one_stage(backbone, datamodule, tmp_path):
    module = MultiOutput(
        backbone,
        datamodule.hierarchy,
        STAGES,
        hidden=[16],
        loss_weights={"category": 0.5, "landmark": 2.0},
    )
    result, snaps = _fit(module, datamodule, tmp_path)
    assert [s.name for s in result.stages] == ["joint"]
    assert result.stages[0].tasks == ("category", "landmark")
    changed = _changed(snaps[0][2], snaps[1][2])
    assert {"net.heads.category.weight", "net.heads.landmark.weight"} <= changed
    assert module.loss_weight("landmark") == 2.0


def test_hierarchical_category_is_the_sum_of_landmark_probabilities(backbone, datamodule):
    module = Hierarchical(backbone, datamodule.hierarchy, STAGES, hidden=[16]).eval()
    x = torch.randn(64, backbone.num_features) * 5
    logits = module.task_logits(x)
    landmark_p = logits["landmark"].softmax(-1)
    parent = datamodule.hierarchy.parent_tensor()
    summed = torch.zeros(64, 2).index_add_(1, parent, landmark_p)
    assert torch.allclose(logits["category"].softmax(-1), summed, atol=1e-6)
    preds = module.decode(logits)
    assert torch.equal(parent[preds["landmark"]], preds["category"])


def test_hierarchical_predictions_are_consistent_after_training(backbone, datamodule, tmp_path):
    module = Hierarchical(backbone, datamodule.hierarchy, STAGES, hidden=[16])
    result, _ = _fit(module, datamodule, tmp_path)
    preds = result.test_outputs.preds
    parent = datamodule.hierarchy.parent_tensor()
    assert torch.equal(parent[preds["landmark"]], preds["category"])
    assert result.stages[0].tasks == ("category", "landmark")


def test_stage_config_errors_name_the_stages(backbone, datamodule):
    with pytest.raises(ValueError, match=r"missing \['category'\]"):
        HeadSwap(backbone, datamodule.hierarchy, {"landmark": STAGES["landmark"]})
    with pytest.raises(ValueError, match=r"unknown \['landmrk'\]"):
        MultiOutput(
            backbone, datamodule.hierarchy, {"joint": STAGES["joint"], "landmrk": STAGES["joint"]}
        )


def test_checkpoints_leave_out_a_frozen_backbone_and_load_back(backbone, datamodule, tmp_path):
    module = MultiOutput(backbone, datamodule.hierarchy, STAGES, hidden=[16])
    result, _ = _fit(module, datamodule, tmp_path)
    checkpoint = torch.load(tmp_path / result.stages[0].best_checkpoint, weights_only=False)
    assert not any(k.startswith("backbone.") for k in checkpoint["state_dict"])
    assert checkpoint["frozen_backbone"]["weights_digest"] == backbone.weights_digest
    fresh = MultiOutput(backbone, datamodule.hierarchy, STAGES, hidden=[16])
    fresh.load_state_dict(restore_frozen_backbone(checkpoint, backbone)["state_dict"])
    assert torch.equal(fresh.net.heads["landmark"].weight, module.net.heads["landmark"].weight)
    other = create_backbone("resnet18", weights="none", input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="same backbone"):
        restore_frozen_backbone(
            torch.load(tmp_path / result.stages[0].best_checkpoint, weights_only=False), other
        )

"""The linear-probe baselines: a correct fit, the strength chosen on validation only, the
hierarchical variant consistent, and the usual run-dir files from a real train()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.splits import SplitSpec
from landmark_tl.evaluation.metrics import macro_f1
from landmark_tl.models.backbone import create_backbone
from landmark_tl.models.strategies import HierarchicalProbe, LinearProbe
from landmark_tl.models.strategies.linear_probe import fit_softmax_regression
from landmark_tl.models.strategies.stages import StageConfig
from landmark_tl.serving.inference import load_run
from landmark_tl.training.fit import fit_stages
from landmark_tl.training.run import train

STAGES = {name: StageConfig(epochs=1, lr=0.0) for name in ("joint", "category", "landmark")}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
# 3 categories x 2 landmarks; landmark k belongs to category k // 2.
HIERARCHY = LabelHierarchy.from_pairs((f"c{k // 2}", f"l{k}") for k in range(6))
GRID = (1e-3, 0.1, 10.0)


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("test_resnet", weights="none", input_size=(3, 32, 32))


def _linear_rule(n: int, dim: int, seed: int, noise: float = 0.0):
    """Features that mix 4 latent factors into ``dim`` dims (plus a little noise, on an
    offset and scale that standardisation must undo); the landmark is the argmax of a
    fixed linear map of the factors; ``noise`` of the labels are redrawn at random."""
    fixed = torch.Generator().manual_seed(123)
    rule, mixing = torch.randn(6, 4, generator=fixed), torch.randn(4, dim, generator=fixed)
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, 4, generator=g)
    x = factors @ mixing + 0.1 * torch.randn(n, dim, generator=g)
    landmark = (factors @ rule.T).argmax(-1)
    flip = torch.rand(n, generator=g) < noise
    landmark[flip] = torch.randint(0, 6, (int(flip.sum()),), generator=g)
    targets = {"landmark": landmark, "category": HIERARCHY.parent_tensor()[landmark]}
    return x * 3.0 + 5.0, targets


def _standardised(x: torch.Tensor) -> torch.Tensor:
    return (x - 5.0) / 3.0


def test_softmax_regression_recovers_a_linear_rule():
    x, y = _linear_rule(2000, 8, seed=0)
    weight, bias = fit_softmax_regression(_standardised(x), y["landmark"], 6, l2=1e-4)
    test_x, test_y = _linear_rule(400, 8, seed=1)
    logits = _standardised(test_x) @ weight.T + bias
    assert (logits.argmax(-1) == test_y["landmark"]).float().mean() > 0.95


def test_stronger_penalty_shrinks_the_weights():
    x, y = _linear_rule(200, 8, seed=0)
    norms = [
        fit_softmax_regression(_standardised(x), y["landmark"], 6, l2)[0].norm()
        for l2 in (1e-3, 1.0)
    ]
    assert norms[1] < 0.5 * norms[0]


def test_probe_fits_both_tasks_on_standardised_features(backbone):
    probe = LinearProbe(backbone, HIERARCHY, STAGES, l2_grid=GRID)
    train = _linear_rule(600, backbone.num_features, seed=0)
    val = _linear_rule(200, backbone.num_features, seed=1)
    chosen = probe.fit_probes(train, val)
    assert set(chosen) == {"category", "landmark"} and set(chosen.values()) <= set(GRID)
    assert torch.allclose(probe.feature_mean, train[0].mean(0))
    test_x, test_y = _linear_rule(400, backbone.num_features, seed=2)
    preds = probe.eval().decode(probe(test_x))
    accuracy = {t: (preds[t] == test_y[t]).float().mean() for t in preds}
    assert accuracy["landmark"] > 0.9  # linear in the factors
    assert accuracy["category"] > 0.7  # unions of landmark cones: not linear; chance 1/3


def test_strength_is_the_best_on_validation_by_an_independent_search(backbone):
    """Noisy labels make the choice matter; the probe picks what a plain search over the
    grid on (train, val) picks."""
    probe = LinearProbe(backbone, HIERARCHY, STAGES, l2_grid=GRID)
    train = _linear_rule(120, backbone.num_features, seed=0, noise=0.3)
    val = _linear_rule(200, backbone.num_features, seed=1, noise=0.3)
    chosen = probe.fit_probes(train, val)
    mean, scale = probe.feature_mean, probe.feature_scale
    z_train, z_val = (train[0] - mean) / scale, (val[0] - mean) / scale
    y_train, y_val = train[1]["landmark"], val[1]["landmark"]
    scores = {}
    for l2 in GRID:
        weight, bias = fit_softmax_regression(z_train, y_train, 6, l2)
        logits = z_val @ weight.T + bias
        f1 = macro_f1(logits.argmax(-1).numpy(), y_val.numpy(), 6)
        scores[l2] = (round(f1, 6), -round(float(F.cross_entropy(logits, y_val)), 4))
    assert len({s[0] for s in scores.values()}) > 1  # the grid points really differ
    assert chosen["landmark"] == max(scores, key=scores.get)


def test_hierarchical_probe_sums_landmark_probabilities(backbone):
    probe = HierarchicalProbe(backbone, HIERARCHY, STAGES, l2_grid=GRID)
    train = _linear_rule(300, backbone.num_features, seed=0)
    val = _linear_rule(100, backbone.num_features, seed=1)
    assert set(probe.fit_probes(train, val)) == {"landmark"}
    probe.eval()
    x = _linear_rule(50, backbone.num_features, seed=2)[0]
    logits = probe(x)
    summed = torch.zeros(50, 3).index_add_(
        1, HIERARCHY.parent_tensor(), logits["landmark"].softmax(-1)
    )
    assert torch.allclose(logits["category"].softmax(-1), summed, atol=1e-6)
    preds = probe.decode(logits)
    assert torch.equal(HIERARCHY.parent_tensor()[preds["landmark"]], preds["category"])
    assert torch.isnan(probe.chosen_l2[0]) and probe.chosen_l2[1] in GRID


def test_without_validation_images_only_one_strength_can_be_used(backbone):
    train = _linear_rule(100, backbone.num_features, seed=0)
    empty = (train[0][:0], {t: y[:0] for t, y in train[1].items()})
    with pytest.raises(ValueError, match="data.split.val above 0"):
        LinearProbe(backbone, HIERARCHY, STAGES, l2_grid=GRID).fit_probes(train, empty)
    single = LinearProbe(backbone, HIERARCHY, STAGES, l2_grid=[0.1])
    assert single.fit_probes(train, empty) == {"category": 0.1, "landmark": 0.1}


def test_probe_refuses_a_bad_grid_and_a_trainable_backbone(backbone):
    with pytest.raises(ValueError, match=r"^l2_grid=\[0.0\]"):
        LinearProbe(backbone, HIERARCHY, STAGES, l2_grid=[0.0])
    unfrozen = create_backbone("test_resnet", weights="none", input_size=(3, 32, 32), freeze="none")
    with pytest.raises(ValueError, match="backbone.freeze=all"):
        LinearProbe(unfrozen, HIERARCHY, STAGES)


def _fit_on_tiny(tiny_tree, backbone, tmp_path, relabel_test: bool, memory: int = 64 << 20):
    dm = LandmarkDataModule(
        tiny_tree,
        backbone.preprocessing,
        split=SplitSpec(1, 2),
        num_workers=0,
        feature_encoder=backbone,
        feature_store=FeatureStore(tmp_path / "features", "enc"),
        feature_memory=memory,
    )
    dm.setup("fit")
    if relabel_test:  # the test split's labels must play no part in the fit
        test = dm.datasets["test"]
        test.categories, test.landmarks = 1 - test.categories, test.landmarks.flip(0)
    probe = LinearProbe(backbone, dm.hierarchy, STAGES, l2_grid=GRID)
    fit_stages(probe, dm, tmp_path, **TRAINER)
    return probe, dm


def test_changing_test_labels_changes_nothing_in_the_fit(tiny_tree, backbone, tmp_path):
    a, _ = _fit_on_tiny(tiny_tree, backbone, tmp_path / "a", relabel_test=False)
    b, _ = _fit_on_tiny(tiny_tree, backbone, tmp_path / "b", relabel_test=True)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert torch.equal(a.chosen_l2, b.chosen_l2)
    for key in ("feature_mean", "net.heads.landmark.weight", "net.heads.category.bias"):
        assert torch.equal(state_a[key], state_b[key])


@pytest.mark.slow
@pytest.mark.parametrize("approach", ["linear_probe", "hierarchical_probe"])
def test_probe_run_writes_the_usual_run_dir(approach, tiny_config, tmp_path):
    config = tiny_config(f"+approach={approach}")
    run_dir = tmp_path / "run"
    metrics = train(config, run_dir)
    assert metrics["approach"] == approach
    assert set(metrics["test"]) == {"category", "landmark"}
    assert (run_dir / "predictions.csv").is_file() and (run_dir / "plots").is_dir()
    stage = metrics["stages"][0]["name"]
    logged = (run_dir / "logs" / stage / "metrics.csv").read_text()
    assert "probe/landmark_l2" in logged and "val/landmark_f1" in logged
    assert json.loads((run_dir / "metrics.json").read_text())["val"]["landmark"]["macro_f1"] >= 0
    loaded = load_run(run_dir)
    assert torch.equal(
        loaded.model.chosen_l2.isnan(), torch.tensor([approach != "linear_probe", False])
    )
    image = next(p for p in Path(config.data.root).rglob("*") if p.is_file())
    assert loaded.predict(image)[0].landmark


def test_a_probe_over_the_memory_budget_fits_from_the_store_as_in_memory(
    tiny_tree, backbone, tmp_path
):
    """features.memory_mb=0: the fit reads the stored rows a chunk at a time (statistics,
    row space, every L-BFGS step) and gives the in-memory fit."""
    (a, dm), (b, _) = (
        _fit_on_tiny(tiny_tree, backbone, tmp_path / str(budget), False, budget)
        for budget in (64 << 20, 0)
    )
    assert dm.datasets["train"].rows.memory is not None  # 64 MiB: the in-memory path
    assert torch.equal(a.chosen_l2, b.chosen_l2)
    state_a, state_b = a.state_dict(), b.state_dict()
    for key in ("feature_mean", "feature_scale", "net.heads.landmark.weight"):
        assert torch.allclose(state_a[key], state_b[key], atol=5e-3)  # L-BFGS: rounding
    test = dm.datasets["test"].rows[range(len(dm.datasets["test"]))]
    predictions = [probe.decode(probe(test)) for probe in (a, b)]
    for task in ("category", "landmark"):
        assert torch.equal(predictions[0][task], predictions[1][task])


def test_study_table1_carries_the_probes_and_its_variant_sweeps_splits():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        table1, splits = (
            compose("train", [f"experiment={name}"], return_hydra_config=True).hydra.sweeper
            for name in ("study_table1", "study_table1_splits")
        )
    approaches = table1.params["+approach"].split(",")
    assert {"linear_probe", "hierarchical_probe"} <= set(approaches)
    assert splits.params["+approach"] == table1.params["+approach"]
    assert splits.params["data.split.seed"] == "0,1,2,3,4" and str(splits.params.seed) == "0"

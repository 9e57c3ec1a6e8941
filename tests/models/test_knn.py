"""kNN on frozen features: the neighbours decide the answer exactly, k and T are chosen on
validation, memory-flat chunked search equals the one-shot search, bad grids are refused
at start naming the key, and a real train() writes a consistent, reloadable run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from landmark_tl.core.errors import ConfigError
from landmark_tl.models import neighbours
from landmark_tl.models.neighbours import KNNClassifier, top_k_neighbours, weighted_vote
from landmark_tl.serving.inference import load_run
from landmark_tl.training.run import train

# four training rows on the unit circle, labels 0, 0, 1, 2
BANK = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([0, 0, 1, 2])


def test_neighbours_are_the_most_cosine_similar_rows():
    query = torch.tensor([[2.0, 1.0]])  # unnormalised: the search normalises it
    sims, index = top_k_neighbours(query, BANK * 3.0, 2)  # so is the bank
    q = query / query.norm()
    assert index.tolist() == [[1, 0]]
    assert sims[0].tolist() == pytest.approx([float(q @ BANK[1]), float(q @ BANK[0])])


def test_chunked_search_equals_the_one_shot_search(monkeypatch):
    torch.manual_seed(0)
    bank, queries = torch.randn(50, 8), torch.randn(7, 8)
    whole = top_k_neighbours(queries, bank, 5)
    monkeypatch.setattr(neighbours, "BANK_CHUNK_ROWS", 3)
    chunked = top_k_neighbours(queries, iter(bank.split(11)), 5)
    assert torch.equal(whole[1], chunked[1]) and torch.allclose(whole[0], chunked[0])
    full = (torch.nn.functional.normalize(queries) @ torch.nn.functional.normalize(bank).T).topk(5)
    assert torch.equal(whole[1], full.indices)


def test_weighted_vote_by_hand():
    sims = torch.tensor([[0.9, 0.8, 0.1]])
    scores = weighted_vote(sims, torch.tensor([[1, 0, 1]]), 3, temperature=0.1)
    total = math.exp(9) + math.exp(8) + math.exp(1)
    expected = [math.exp(8) / total, (math.exp(9) + math.exp(1)) / total, 0.0]
    assert scores[0].tolist() == pytest.approx(expected)


def test_k_is_chosen_on_validation_and_decides_the_answer():
    """A query next to row 2 (label 1): one neighbour says 1; three neighbours (rows 2, 1,
    0 by similarity) outvote it with two 0s at a high temperature."""
    val = torch.tensor([[0.3, 1.0]])
    for truth, k in ((1, 1), (0, 3)):
        knn = KNNClassifier(num_classes=3, width=2)
        chosen = knn.fit([BANK], LABELS, [val], torch.tensor([truth]), [1, 3], [10.0])
        assert chosen["k"] == k and int(knn.k) == k
        assert knn(val).argmax(1).tolist() == [truth]
    assert knn(val).exp().sum().item() == pytest.approx(1.0)


def test_a_k_above_the_bank_is_dropped_and_all_above_is_refused():
    knn = KNNClassifier(num_classes=3, width=2)
    knn.fit([BANK], LABELS, [BANK[:1]], LABELS[:1], [2, 50], [0.07])
    assert int(knn.k) == 2
    with pytest.raises(ValueError, match=r"k_grid=\[50\]"):
        knn.fit([BANK], LABELS, [BANK[:1]], LABELS[:1], [50], [0.07])


def test_a_checkpoint_restores_the_bank_into_a_new_classifier():
    knn = KNNClassifier(num_classes=3, width=2)
    knn.fit([BANK], LABELS, [], torch.zeros(0, dtype=torch.long), [3], [0.5])
    fresh = KNNClassifier(num_classes=3, width=2)
    fresh.load_state_dict(knn.state_dict())
    assert torch.equal(fresh.bank, knn.bank) and int(fresh.k) == 3
    assert torch.allclose(fresh(BANK), knn(BANK))


def test_knn_run_is_consistent_and_reloads(tiny_config, tmp_path: Path):
    config = tiny_config(
        "strategy=knn", "strategy.k_grid=[1,3,100]", "strategy.temperatures=[0.07]"
    )
    metrics = train(config, tmp_path / "run")
    assert metrics["hierarchy"]["consistency"] == 1.0
    assert {"mistake_severity", "hierarchical_distance_at_5"} <= set(metrics["hierarchy"])
    assert metrics["stages"][0]["epochs"] == 1
    log = (tmp_path / "run" / "logs" / "landmark" / "metrics.csv").read_text()
    assert "knn/k" in log
    run = load_run(tmp_path / "run")
    assert int(run.model.knn.k) in (1, 3) and len(run.model.knn.bank) == 12  # 4 x 3 train
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == metrics["test"]["landmark"]["n"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["strategy"] == "knn"


def test_a_k_grid_above_the_train_split_is_refused_at_start(tiny_config, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"strategy.k_grid=\[100\].*12 training images"):
        train(tiny_config("strategy=knn", "strategy.k_grid=[100]"), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_grids_and_an_unfrozen_backbone_are_refused(tiny_config, tmp_path: Path):
    for override, key in (
        ("strategy.k_grid=[0]", "strategy.k_grid"),
        ("strategy.temperatures=[0.0]", "strategy.temperatures"),
        ("backbone.freeze=none", "backbone.freeze=all"),
    ):
        with pytest.raises(ConfigError, match=key):
            train(tiny_config("strategy=knn", override), tmp_path / override)

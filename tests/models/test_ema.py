"""An average of the weights (callbacks=ema) is evaluated alongside the raw weights."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

from landmark_tl.config.schema import ConfigError
from landmark_tl.training.run import summary, train


class RecordWeights(L.Callback):
    """Keeps the averaged weights' history: at the fit's start and after every step."""

    history: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, pl_module):
        RecordWeights.history = [self._weights(pl_module)]

    def on_train_batch_end(self, trainer, pl_module, *args):
        RecordWeights.history.append(self._weights(pl_module))

    @staticmethod
    def _weights(pl_module):
        return {k: v.detach().clone() for k, v in pl_module.averaged_weights("joint").items()}


def _ema_state(checkpoint_path):
    state = torch.load(checkpoint_path, weights_only=True)["callbacks"]
    (key,) = [k for k in state if k.startswith("WeightEMA")]
    return state[key]


@pytest.mark.slow
def test_the_average_follows_the_ema_rule_after_every_step(tiny_config, tmp_path):
    config = tiny_config(
        "callbacks=[ema]",
        "callbacks.ema.decay=0.5",
        f"+callbacks.record._target_={__name__}.RecordWeights",
        "strategy.monitor=val_ema/loss",
    )
    metrics = train(config, tmp_path / "run")
    history = RecordWeights.history
    assert len(history) == 1 + 4  # 12 training images, batch 8, 2 epochs: 4 steps
    expected = {k: v.clone() for k, v in history[0].items()}
    for weights in history[1:]:
        for name in expected:
            expected[name] = 0.5 * expected[name] + 0.5 * weights[name]
    saved = _ema_state(tmp_path / "run/checkpoints/joint-last.ckpt")
    assert saved["steps"] == 4 and set(saved["average"]) == set(expected)
    assert set(expected) == {k for k in history[0] if k.startswith("net.")}  # the heads only
    for name, value in expected.items():
        torch.testing.assert_close(saved["average"][name], value)
    assert not torch.equal(saved["average"]["net.heads.landmark.weight"], history[-1][name])
    # both are scored; the kept checkpoint is the epoch whose average had the lowest loss
    with open(tmp_path / "run/logs/joint/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_ema/loss") and int(r["epoch"]) < 2]
    assert len(rows) == 2 and all(r["val/loss"] for r in rows)  # one per epoch, both scored
    best = min(float(r["val_ema/loss"]) for r in rows)
    assert metrics["stages"][0]["best_score"] == pytest.approx(best)
    assert set(metrics["test_ema"]) == set(metrics["val_ema"]) == {"category", "landmark"}
    assert "average" in metrics["ema"]


@pytest.mark.slow
def test_with_no_averaging_the_average_scores_as_the_raw_weights(tiny_config, tmp_path):
    metrics = train(tiny_config("callbacks=[ema]", "callbacks.ema.decay=0"), tmp_path / "run")
    assert metrics["val_ema"] == metrics["val"]
    for task, scores in metrics["test"].items():
        assert metrics["test_ema"][task] == pytest.approx(scores)
    printed = summary(metrics, tmp_path / "run").splitlines()
    assert sum("(average of the weights, callbacks=ema)" in line for line in printed) == 2


@pytest.mark.slow
def test_an_average_that_never_moves_scores_the_initial_weights(tiny_config, tmp_path):
    metrics = train(
        tiny_config("callbacks=[ema]", "callbacks.ema.decay=1", "strategy.monitor=val_ema/loss"),
        tmp_path / "run",
    )
    initial = torch.load(tmp_path / "run/checkpoints/joint-best.ckpt", weights_only=True)
    average = _ema_state(tmp_path / "run/checkpoints/joint-best.ckpt")["average"]
    trained = initial["state_dict"]
    assert any(not torch.equal(average[k], trained[k]) for k in average)
    untrained = train(tiny_config("strategy.stages.joint.lr=0"), tmp_path / "untrained")
    for task in ("category", "landmark"):
        assert metrics["test_ema"][task]["macro_f1"] == pytest.approx(
            untrained["test"][task]["macro_f1"]
        )
        assert metrics["val_ema"][task] == pytest.approx(untrained["val"][task])


@pytest.mark.slow
def test_probes_have_nothing_to_average(tiny_config, tmp_path):
    metrics = train(tiny_config("strategy=linear_probe", "callbacks=[ema]"), tmp_path / "run")
    assert "test_ema" not in metrics and metrics["test"]["landmark"]["macro_f1"] >= 0
    with pytest.raises(ConfigError, match="val_ema/loss.*does not log it"):
        train(
            tiny_config(
                "strategy=linear_probe", "callbacks=[ema]", "strategy.monitor=val_ema/loss"
            ),
            tmp_path / "refused",
        )


def test_a_decay_outside_0_1_is_refused_naming_the_key(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks.ema.decay=1.5: must be in \[0, 1\]"):
        train(tiny_config("callbacks=[ema]", "callbacks.ema.decay=1.5"), tmp_path / "run")

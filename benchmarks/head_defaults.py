"""Which MLP-head defaults earn their keep against the linear probe? Train and val data only.

    OMP_NUM_THREADS=1 python benchmarks/head_defaults.py   # writes outputs/head_defaults.md

(docs/head_defaults.md is assembled from its rounds, with the commands of each.)

Protocol (the test split of every data set is never read): for each data set and split
seed, the split's *train* images are split again per landmark into inner-train and
inner-val (2 images per landmark); heads and the probe are fitted on inner-train, their
checkpoint or L2 strength is chosen on inner-val, and they are scored on the split's
*val* images, which no choice has seen. The head is the multi_output network
(``TrunkAndHeads``: shared trunk, two output layers, CE_category + CE_landmark) trained
as the framework's stage does (Adam, batch 32, shuffled, one checkpoint per epoch), in a
plain loop here so that a grid of settings runs in minutes on a CPU; the probe is
``LinearProbe.fit_probes``. Score: landmark macro F1 on the outer val split, mean over
head seeds.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from landmark_tl.config.schema import CONFIG_DIR, TrainConfig, register_configs, to_train_config
from landmark_tl.evaluation.metrics import macro_f1
from landmark_tl.models.strategies import LinearProbe
from landmark_tl.models.strategies.base import TrunkAndHeads
from landmark_tl.models.strategies.stages import StageConfig
from landmark_tl.training.build import prepare_data

REPO = Path(__file__).resolve().parents[1]
# name -> overrides of a data set; the embedded one and a larger one generated differently.
DATASETS = {
    "embedded": [],
    "synthetic-seed1-n20": ["data.synthetic_seed=1", "data.images_per_landmark=20"],
}
SPLIT_SEEDS = (0, 1, 2, 3, 4)
HEAD_SEEDS = (0, 1)
INNER_VAL = 2  # images per landmark taken from train for choosing checkpoints


@dataclass(frozen=True)
class Head:
    """One setting of the head and its training."""

    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 40
    cosine: bool = False  # cosine learning-rate decay to 0 over the epochs (per step)
    warmup_epochs: int = 0  # linear warmup before the cosine decay (optim.warmup_epochs)
    label_smoothing: float = 0.0  # of the training loss (optim.label_smoothing)
    ema: float | None = None  # evaluate an EMA of the weights with this decay (callbacks=ema)
    # checkpoint chosen on inner-val: "loss" (min), "f1" (landmark F1, max), "mean_f1" (mean
    # of both tasks' F1, max: what strategy.monitor=val/f1 does in a joint stage) or "last"
    # (the last epoch: no choice, so the inner-val score is an unbiased estimate)
    monitor: str = "loss"
    standardise: bool = False  # inputs standardised with train statistics, as the probe


CURRENT = Head()  # the defaults before this benchmark chose new ones (the last row below)
# the defaults since the first round (conf/head/mlp.yaml, conf/strategy: val/f1)
ADOPTED = replace(CURRENT, dropout=0.5, weight_decay=1e-3, monitor="mean_f1")
CANDIDATES = {
    "previous defaults (512, dropout 0.1, 40 ep, ckpt val loss)": CURRENT,
    "ckpt on val F1": replace(CURRENT, monitor="f1"),
    "weight decay 1e-3": replace(CURRENT, weight_decay=1e-3),
    "dropout 0.5": replace(CURRENT, dropout=0.5),
    "100 epochs, cosine": replace(CURRENT, epochs=100, cosine=True),
    "standardised inputs": replace(CURRENT, standardise=True),
    "width 1024": replace(CURRENT, hidden=(1024,)),
    "no hidden layer (linear, Adam)": replace(CURRENT, hidden=()),
    "dropout 0.5, wd 1e-3, ckpt F1": replace(CURRENT, dropout=0.5, weight_decay=1e-3, monitor="f1"),
    "dropout 0.5, wd 1e-3": replace(CURRENT, dropout=0.5, weight_decay=1e-3),
    # the defaults now (conf/head/mlp.yaml, conf/strategy: strategy.monitor=val/f1)
    "dropout 0.5, wd 1e-3, ckpt mean F1": replace(
        CURRENT, dropout=0.5, weight_decay=1e-3, monitor="mean_f1"
    ),
    "standardised, dropout 0.5, ckpt F1": replace(
        CURRENT, standardise=True, dropout=0.5, monitor="f1"
    ),
    "standardised, dropout 0.5, wd 1e-3, 100 ep cosine, ckpt F1": replace(
        CURRENT,
        standardise=True,
        dropout=0.5,
        weight_decay=1e-3,
        epochs=100,
        cosine=True,
        monitor="f1",
    ),
    # second round, from the adopted defaults (docs/head_defaults.md)
    "adopted: dropout 0.5, wd 1e-3, ckpt mean F1": ADOPTED,
    "adopted + cosine (1 ep warmup)": replace(ADOPTED, cosine=True, warmup_epochs=1),
    "adopted + cosine, last epoch": replace(ADOPTED, cosine=True, warmup_epochs=1, monitor="last"),
    "adopted + label smoothing 0.1": replace(ADOPTED, label_smoothing=0.1),
    "adopted + EMA 0.99 (ckpt on EMA)": replace(ADOPTED, ema=0.99),
    "adopted + wd 1e-2": replace(ADOPTED, weight_decay=1e-2),
    "adopted + width 1024": replace(ADOPTED, hidden=(1024,)),
    "adopted + 80 ep cosine, last epoch": replace(
        ADOPTED, epochs=80, cosine=True, warmup_epochs=1, monitor="last"
    ),
    "adopted + cosine, label smoothing 0.1": replace(
        ADOPTED, cosine=True, warmup_epochs=1, label_smoothing=0.1
    ),
    "adopted + cosine, EMA 0.99 (ckpt on EMA)": replace(
        ADOPTED, cosine=True, warmup_epochs=1, ema=0.99
    ),
}


def load_config(overrides: list[str]) -> TrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return to_train_config(compose(config_name="train", overrides=overrides))


def train_val_features(overrides: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    """(features, category, landmark) of the train and val splits; test is not returned."""
    _, datamodule = prepare_data(load_config(overrides))
    return {split: _all_rows(datamodule.datasets[split]) for split in ("train", "val")}


def _all_rows(dataset) -> tuple[torch.Tensor, ...]:
    """A feature dataset's rows and labels, all at once (these sets are small)."""
    return dataset.__getitems__(list(range(len(dataset))))


def inner_split(landmarks: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of inner-train and inner-val: INNER_VAL random images of each landmark."""
    g = torch.Generator().manual_seed(seed)
    held = []
    for lm in landmarks.unique():
        members = torch.nonzero(landmarks == lm).flatten()
        held.append(members[torch.randperm(len(members), generator=g)[:INNER_VAL]])
    val = torch.cat(held)
    mask = torch.ones(len(landmarks), dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask).flatten(), val


def fit_head(head: Head, data: dict, classes: dict[str, int], seed: int) -> tuple[float, float]:
    """Train on inner-train, choose the epoch on inner-val; (outer-val, inner-val) landmark F1
    of the kept weights (the inner-val one is what an approach would be chosen on)."""
    torch.manual_seed(seed)
    x, c, lm = data["train"]
    vx, vc, vl = data["val"]
    ox, _, ol = data["outer"]
    if head.standardise:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        x, vx, ox = ((t - mean) / std for t in (x, vx, ox))
    net = TrunkAndHeads(x.shape[1], head.hidden, head.dropout, classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=head.lr, weight_decay=head.weight_decay)
    per_epoch = math.ceil(len(x) / 32)
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            partial(_warmup_cosine, per_epoch * head.warmup_epochs, per_epoch * head.epochs),
        )
        if head.cosine
        else None
    )
    # torch's AveragedModel: the same update as the framework's WeightEMA callback
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(head.ema)) if head.ema else None
    scored = ema if ema is not None else net
    best, best_state = None, None
    for _ in range(head.epochs):
        net.train()
        for batch in torch.randperm(len(x)).split(32):
            out = net(x[batch])
            loss = sum(
                F.cross_entropy(out[task], y[batch], label_smoothing=head.label_smoothing)
                for task, y in (("category", c), ("landmark", lm))
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(net)
            if schedule is not None:
                schedule.step()
        scored.eval()
        with torch.no_grad():
            out = scored(vx)
            val_loss = float(
                F.cross_entropy(out["category"], vc) + F.cross_entropy(out["landmark"], vl)
            )
            f1 = macro_f1(out["landmark"].argmax(-1).numpy(), vl.numpy(), classes["landmark"])
            f1_category = macro_f1(
                out["category"].argmax(-1).numpy(), vc.numpy(), classes["category"]
            )
        score = {"loss": -val_loss, "f1": f1, "mean_f1": (f1 + f1_category) / 2, "last": 0.0}[
            head.monitor
        ]
        if best is None or score > best or head.monitor == "last":  # first best kept, as Lightning
            best, inner_f1 = score, f1
            best_state = {k: v.clone() for k, v in scored.state_dict().items()}
    scored.load_state_dict(best_state)
    with torch.no_grad():
        pred = scored(ox)["landmark"].argmax(-1)
    return macro_f1(pred.numpy(), ol.numpy(), classes["landmark"]), inner_f1


def _warmup_cosine(warmup: int, total: int, step: int) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def probe_f1(
    data: dict, hierarchy_parent: torch.Tensor, classes: dict[str, int]
) -> tuple[float, float]:
    """(outer-val, inner-val) landmark F1 of the probe, its strength chosen on inner-val."""
    from landmark_tl.core.hierarchy import LabelHierarchy

    hierarchy = LabelHierarchy.from_pairs(
        (f"c{int(p):02d}", f"l{k:03d}") for k, p in enumerate(hierarchy_parent)
    )

    class FrozenFeatures(torch.nn.Module):  # all a probe needs of a backbone
        num_features, frozen, schedule = data["train"][0].shape[1], True, None

    probe = LinearProbe(FrozenFeatures(), hierarchy, {"joint": StageConfig(epochs=1, lr=0.0)})
    pack = {k: (v[0], {"category": v[1], "landmark": v[2]}) for k, v in data.items()}
    probe.fit_probes(pack["train"], pack["val"])
    probe.eval()
    scores = []
    for split in ("outer", "val"):
        pred = probe.decode(probe(data[split][0]))["landmark"]
        scores.append(macro_f1(pred.numpy(), data[split][2].numpy(), classes["landmark"]))
    return scores[0], scores[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "head_defaults.md")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--splits", nargs="+", type=int, default=list(SPLIT_SEEDS))
    parser.add_argument(
        "--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES)
    )
    args = parser.parse_args()
    start = time.perf_counter()
    candidates = {name: CANDIDATES[name] for name in args.candidates}
    # (outer-val F1, inner-val F1) per candidate and (data set, split seed)
    results: dict[str, dict[tuple[str, int], tuple[float, float]]] = {
        name: {} for name in candidates
    }
    results["linear probe"] = {}
    datasets = {name: DATASETS[name] for name in args.datasets}
    for (dataset, overrides), split in itertools.product(datasets.items(), args.splits):
        outer = train_val_features([*overrides, f"data.split.seed={split}"])
        x, c, lm = outer["train"]
        inner_train, inner_val = inner_split(lm, seed=split)
        data = {
            "train": (x[inner_train], c[inner_train], lm[inner_train]),
            "val": (x[inner_val], c[inner_val], lm[inner_val]),
            "outer": outer["val"],
        }
        parent = torch.zeros(int(lm.max()) + 1, dtype=torch.long)
        parent[lm] = c
        classes = {"category": int(c.max()) + 1, "landmark": int(lm.max()) + 1}
        results["linear probe"][dataset, split] = probe_f1(data, parent, classes)
        for name, head in candidates.items():
            scores = [fit_head(head, data, classes, seed) for seed in HEAD_SEEDS]
            results[name][dataset, split] = tuple(np.mean(scores, axis=0).tolist())
        print(
            dataset,
            split,
            {k: tuple(round(f, 3) for f in v[dataset, split]) for k, v in results.items()},
            flush=True,
        )
    command = " ".join(["python benchmarks/head_defaults.py", *sys.argv[1:]])
    write_markdown(results, args.out, time.perf_counter() - start, command)


def write_markdown(results: dict, out: Path, seconds: float, command: str) -> None:
    """Outer-val landmark F1 per split; and the choice between the head and the probe on
    inner-val (the head when its inner-val F1 is higher), scored on outer-val minus the
    probe: what choosing an approach on validation gives."""
    keys = sorted(next(iter(results.values())))
    header = [
        "Head setting",
        *(f"{d} split {s}" for d, s in keys),
        "mean",
        "≥ probe on",
        "chosen on inner-val − probe",
        "chosen ≥ probe on",
    ]
    probe = results["linear probe"]
    lines = [
        "# Head defaults against the linear probe (train/val data only)",
        "",
        f"Written by `OMP_NUM_THREADS=1 {command}` "
        f"({seconds / 60:.1f} min on this machine). Protocol in the script's docstring: "
        "fitted on inner-train, chosen on inner-val, scored on the split's val images "
        "(landmark macro F1; heads: mean of "
        f"{len(HEAD_SEEDS)} seeds). No test split is read.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "--:|" * (len(header) - 1),
    ]
    for name, scores in results.items():
        outer = [scores[k][0] for k in keys]
        wins = sum(scores[k][0] >= probe[k][0] for k in keys)
        chosen = [
            (scores[k][0] if scores[k][1] > probe[k][1] else probe[k][0]) - probe[k][0]
            for k in keys
        ]
        cells = [f"{f:.3f}" for f in outer]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {np.mean(outer):.3f} | {wins}/{len(keys)} | {np.mean(chosen):+.3f}"
            + f" | {sum(d >= 0 for d in chosen)}/{len(keys)} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

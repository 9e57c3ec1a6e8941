"""Speed benchmarks of landmark_tl against their limits, measured side by side in one run.

    python benchmarks/speed.py                 # every section; writes docs/benchmarks.md
    python benchmarks/speed.py --section a     # one section, JSON on stdout

a  extraction: the data pipeline (scan, digest, decode, resize, backbone) vs the bare timm
   forward on ready tensors of the same shape              goal: throughput ratio >= 0.85
b  the whole study_table1 (8 approaches x 3 seeds) vs one feature pass    goal: <= 1.5x
   (heads launcher; the basic launcher's figure beside it)
c  one training epoch from cached features vs recomputing them          goal: >= 50x faster
d  the 27-point study_grid sweep (heads launcher) vs a single run        goal: <= 3x
   (the joblib launcher's figure beside it)
e  fine-tuning steps/s with data loading vs bare forward+backward       goal: ratio >= 0.85
s  heads-launcher sweeps of 9, 27 and 81 points: seconds per extra point (no goal)
f  peak memory (max RSS) of each section, children included
h  one fine-tuning epoch (backbone.freeze=none, 128 px): the framework's Trainer vs a bare
   timm training loop on the same decoded images, model, batch and optimiser
                                                            goal: img/s ratio >= 0.9
g  the GPU path (trainer=gpu: bf16, channels_last), only with --section g on a CUDA
   machine: a default run, the feature pass vs the bare bf16 forward, one fine-tuning
   epoch (goal: pass / bare >= 0.85)

Each section runs in its own process on the embedded data set, with a fresh feature cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from doc_section import replace_section
from torch.utils.data import DataLoader, Subset, TensorDataset

REPO = Path(__file__).resolve().parents[1]
SECTIONS = "abcdehs"
GOALS = {
    "a": ("pipeline / bare throughput", ">= 0.85", lambda r: r >= 0.85),
    "b": ("study_table1 / one feature pass", "<= 1.5", lambda r: r <= 1.5),
    "c": ("recompute epoch / cached epoch", ">= 50", lambda r: r >= 50),
    "d": ("27-point sweep / single run", "<= 3", lambda r: r <= 3),
    "e": ("fine-tune steps/s with loading / bare", ">= 0.85", lambda r: r >= 0.85),
    "s": ("seconds per extra sweep point / single run", "—", None),
    "h": ("fine-tuning epoch img/s: framework / bare timm loop", ">= 0.9", lambda r: r >= 0.9),
    "g": ("GPU: feature pass / bare bf16 forward", ">= 0.85", lambda r: r >= 0.85),
}
# Sweeps off the hot path: no per-run plots (landmark-tl report runs=DIR run_plots=true).
HEADS = ["hydra/launcher=heads", "extras.plots=false"]
# --heads-only: b and d leave out the basic / joblib launcher's run (the longest part of
# the benchmark on a busy machine); their *_ratio figures are then absent
BASELINES = os.environ.get("LTL_BENCH_HEADS_ONLY") != "1"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _data_root(work: Path) -> Path:
    from landmark_tl.data.synthetic.generate import ensure_synthetic_dataset

    return ensure_synthetic_dataset(work / "datasets")


def _train_cli(*overrides: str) -> float:
    """Wall time of ``python -m landmark_tl.train`` with ``overrides``."""
    command = [sys.executable, "-m", "landmark_tl.train", *overrides]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def _pipeline_vs_bare(work: Path, device: str = "cpu", autocast: torch.dtype | None = None) -> dict:
    """Cold-cache data-module setup (the whole feature pass) vs bare forward passes, on
    ``device`` under ``autocast``."""
    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.data.features.extraction import encoder_key, extract_features
    from landmark_tl.data.features.store import FeatureStore
    from landmark_tl.models.backbone import create_backbone

    backbone = create_backbone()
    store = FeatureStore(work / "features-a", encoder_key(backbone))
    dm = LandmarkDataModule(
        _data_root(work),
        backbone.preprocessing,
        feature_encoder=backbone,
        feature_store=store,
        feature_device=device,
        feature_autocast=autocast,
    )
    pipeline = _timed(lambda: dm.setup("fit"))
    n = sum(len(d) for d in dm.datasets.values())
    ready = torch.randint(0, 256, (n, *backbone.preprocessing.input_size), dtype=torch.uint8)
    extract = functools.partial(extract_features, backbone, ready, device=device, autocast=autocast)
    if device != "cpu":
        extract()  # warm-up: kernels chosen, memory allocated
        torch.cuda.synchronize()
    bare = _timed(extract)  # the pass's batch size
    return {
        "images": n,
        "pipeline_s": pipeline,
        "bare_s": bare,
        "pipeline_img_s": n / pipeline,
        "bare_img_s": n / bare,
        "ratio": bare / pipeline,
    }


def section_a(work: Path) -> dict:
    return _pipeline_vs_bare(work)


def section_b(work: Path) -> dict:
    root = _data_root(work)
    feature_pass = _pipeline_vs_bare(work)["pipeline_s"]
    common = ["-m", "experiment=study_table1", "data=folder", f"data.root={root}"]
    table1 = {
        name: _train_cli(
            *common,
            *launcher,
            f"paths.cache_dir={work / f'cache-b-{name}'}",
            f"paths.output_dir={work / f'out-{name}'}",
        )
        for name, launcher in (("basic", []), ("heads", HEADS))
        if BASELINES or name == "heads"
    }
    basic = table1.get("basic")
    return {
        "runs": 24,
        "feature_pass_s": feature_pass,
        **({} if basic is None else {"table1_basic_s": basic, "basic_ratio": basic / feature_pass}),
        "table1_heads_s": table1["heads"],
        "ratio": table1["heads"] / feature_pass,
    }


def _one_epoch(module, datamodule) -> float:
    import lightning as L

    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    return _timed(lambda: trainer.fit(module, datamodule=datamodule))


def section_c(work: Path) -> dict:
    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.data.features.extraction import encoder_key
    from landmark_tl.data.features.store import FeatureStore
    from landmark_tl.models.backbone import create_backbone
    from landmark_tl.models.strategies import MultiOutput, StageConfig

    backbone = create_backbone()
    root = _data_root(work)
    stages = {"joint": StageConfig(epochs=1, lr=3e-3)}
    epochs = {}
    for name, encoder in (("cached", backbone), ("recomputed", None)):
        store = FeatureStore(work / "features-c", encoder_key(backbone)) if encoder else None
        dm = LandmarkDataModule(
            root, backbone.preprocessing, feature_encoder=encoder, feature_store=store
        )
        dm.setup("fit")
        module = MultiOutput(backbone, dm.hierarchy, stages)
        module.begin_stage("joint")
        epochs[name] = _one_epoch(module, dm)
    return {
        "cached_epoch_s": epochs["cached"],
        "recomputed_epoch_s": epochs["recomputed"],
        "ratio": epochs["recomputed"] / epochs["cached"],
    }


def section_d(work: Path) -> dict:
    root = _data_root(work)
    common = ["data=folder", f"data.root={root}", f"paths.output_dir={work / 'out'}"]
    single = _train_cli(*common, f"paths.cache_dir={work / 'cache-single'}")
    sweeps = {
        name: _train_cli(
            "-m",
            "sweep=study_grid",
            *launcher,
            *common,
            f"paths.cache_dir={work / f'cache-{name}'}",
        )
        for name, launcher in (("joblib", ["hydra/launcher=joblib"]), ("heads", HEADS))
        if BASELINES or name == "heads"
    }
    joblib = sweeps.get("joblib")
    return {
        "points": 27,
        "single_s": single,
        **({} if joblib is None else {"sweep_joblib_s": joblib, "joblib_ratio": joblib / single}),
        "sweep_heads_s": sweeps["heads"],
        "ratio": sweeps["heads"] / single,
    }


# 9, 27 and 81 points: learning rate x dropout (x batch size (x seed)), heads launcher.
SCALING_GRIDS = {
    9: ["strategy.lr=0.0003,0.001,0.003", "head.dropout=0.0,0.1,0.3"],
    27: ["sweep=study_grid"],
    81: ["sweep=study_grid", "seed=0,1,2"],
}


def section_s(work: Path) -> dict:
    """Time per extra point of a heads-launcher sweep, from 9 to 27 and 81 points."""
    root = _data_root(work)
    common = ["data=folder", f"data.root={root}", f"paths.output_dir={work / 'out'}"]
    cache = f"paths.cache_dir={work / 'cache'}"
    single = _train_cli(*common, cache)  # also fills the cache the sweeps then read
    seconds = {
        n: _train_cli("-m", *grid, *HEADS, *common, cache) for n, grid in SCALING_GRIDS.items()
    }
    per_point = (seconds[81] - seconds[9]) / (81 - 9)
    return {
        "single_s": single,
        **{f"sweep_{n}_s": t for n, t in seconds.items()},
        "per_point_9_27_s": (seconds[27] - seconds[9]) / 18,
        "per_point_27_81_s": (seconds[81] - seconds[27]) / 54,
        "per_point_s": per_point,
        "ratio": per_point / single,
    }


def section_g(work: Path, trainer: str = "gpu", device: str = "cuda") -> dict:
    """The GPU path: a default run with ``trainer=gpu``, the feature pass against the bare
    bf16 forward, and one epoch fine-tuning the whole backbone (its wall time from the
    run's metrics.json). ``trainer``/``device`` cpu only try the section out."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("section g needs a CUDA GPU (trainer=gpu); none is visible here")
    root = _data_root(work)
    common = [f"trainer={trainer}", "data=folder", f"data.root={root}"]

    def run(name: str, *overrides: str) -> tuple[float, dict]:
        out = work / f"out-{name}"
        seconds = _train_cli(
            *common,
            *overrides,
            f"paths.cache_dir={work / f'cache-{name}'}",
            f"paths.output_dir={out}",
        )
        metrics = json.loads(next(out.rglob("metrics.json")).read_text(encoding="utf-8"))
        return seconds, metrics

    run_s, default = run("default")
    features = _pipeline_vs_bare(work, device, torch.bfloat16)
    finetune_s, tuned = run("finetune", "backbone.freeze=none", "strategy.stages.joint.epochs=1")
    landmark = default["test"]["landmark"]["macro_f1"] if "test" in default else None
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "default_run_s": run_s,
        "default_landmark_f1": landmark,
        "pass_img_s": features["pipeline_img_s"],
        "bare_bf16_img_s": features["bare_img_s"],
        "finetune_run_s": finetune_s,
        "finetune_epoch_s": tuned["timings"]["train_s"],
        "ratio": features["ratio"],
    }


def section_e(work: Path, steps: int = 3, rounds: int = 3, batch_size: int = 16) -> dict:
    from torch.utils.data import DataLoader

    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.models.backbone import create_backbone
    from landmark_tl.models.strategies import MultiOutput, StageConfig

    torch.manual_seed(0)
    backbone = create_backbone(freeze="none")
    dm = LandmarkDataModule(_data_root(work), backbone.preprocessing, augment="random")
    dm.setup("fit")
    module = MultiOutput(backbone, dm.hierarchy, {"joint": StageConfig(epochs=30, lr=3e-3)}).train()
    module.begin_stage("joint")
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, dict):  # with a learning-rate schedule: Lightning's dict form
        optimizer = optimizer["optimizer"]

    def step(x, c, lm):
        logits = module(x)
        loss = torch.nn.functional.cross_entropy(
            logits["category"], c
        ) + torch.nn.functional.cross_entropy(logits["landmark"], lm)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    loader = DataLoader(dm.datasets["train"], batch_size=batch_size, shuffle=True)
    ready = next(iter(loader))
    for _ in range(2):  # warm-up
        step(*ready)
    loaded = plain = 0.0
    for _ in range(rounds):  # interleaved, so drift hits both sides alike
        plain += _timed(lambda: [step(*ready) for _ in range(steps)])
        loaded += _timed(lambda: [step(*b) for _, b in zip(range(steps), loader, strict=False)])
    total = rounds * steps
    return {
        "steps": total,
        "batch_size": batch_size,
        "loaded_steps_s": total / loaded,
        "bare_steps_s": total / plain,
        "ratio": plain / loaded,
    }


def _decoded_train_split(config) -> tuple[object, object, TensorDataset]:
    """The framework's backbone and data module for ``config``, and its training split
    decoded once (by the data module's own decoder, in its loader workers) into uint8
    tensors with their labels: what both sides of section h read."""
    from landmark_tl.training.build import prepare_data

    backbone, dm = prepare_data(config)
    batches = list(DataLoader(dm.datasets["train"], batch_size=64, num_workers=dm.num_workers))
    return backbone, dm, TensorDataset(*(torch.cat(t) for t in zip(*batches, strict=True)))


def _bare_copy(module, optimizer: torch.optim.Optimizer):
    """A plain copy of the strategy's timm model and heads, and an optimiser of the same
    class, parameter groups and settings over the copy's parameters."""
    import copy

    model, heads = copy.deepcopy(module.backbone.model), copy.deepcopy(module.net)
    originals = [*module.backbone.model.parameters(), *module.net.parameters()]
    copies = dict(zip(map(id, originals), [*model.parameters(), *heads.parameters()], strict=True))
    groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [copies[id(p)] for p in g["params"]],
        }
        for g in optimizer.param_groups
    ]
    return model, heads, type(optimizer)(groups, **optimizer.defaults)


def section_h(work: Path, input_px: int = 128, batch_size: int = 32, rounds: int = 2) -> dict:
    """One fine-tuning epoch (``backbone.freeze=none``, default backbone and strategy) of
    the framework (its Trainer as a run builds it: checkpoints, CSV log, callbacks) against
    a bare loop over the same timm model and heads, batch size and optimiser, both reading
    the same decoded uint8 images; epochs interleaved, the best of ``rounds`` each."""
    import torch.nn.functional as F

    from landmark_tl.config.lightning import trainer_arguments
    from landmark_tl.config.schema import compose
    from landmark_tl.training.build import build_strategy
    from landmark_tl.training.fit import build_trainer

    config = compose(
        [
            "backbone.freeze=none",
            f"backbone.input_size=[3,{input_px},{input_px}]",
            f"data.batch_size={batch_size}",
            "trainer=cpu",
            f"paths.cache_dir={work / 'cache'}",
        ]
    )
    backbone, dm, decoded = _decoded_train_split(config)
    loader = DataLoader(decoded, batch_size=batch_size, shuffle=True)
    module = build_strategy(config, backbone, dm.hierarchy)
    module.begin_stage("joint")
    stage = dataclasses.replace(module.stages["joint"], epochs=1)
    model, heads, optimizer = _bare_copy(module, module.configure_optimizers()["optimizer"])
    smoothing = config.optim.label_smoothing
    weights = module.loss_weights

    def bare_epoch(batches: DataLoader) -> None:
        model.train(), heads.train()
        for x, category, landmark in batches:
            x = (x.float() / 255.0 - backbone.mean) / backbone.std
            logits = heads(model(x))
            loss = weights["category"] * F.cross_entropy(
                logits["category"], category, label_smoothing=smoothing
            ) + weights["landmark"] * F.cross_entropy(
                logits["landmark"], landmark, label_smoothing=smoothing
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def framework_epoch(batches: DataLoader) -> None:
        trainer = build_trainer(
            "joint",
            stage,
            work / "run",
            validate=False,
            backbone=backbone,
            **trainer_arguments(config.trainer),
        )
        trainer.fit(module, train_dataloaders=batches)

    warm_up = DataLoader(Subset(decoded, range(2 * batch_size)), batch_size=batch_size)
    framework_epoch(warm_up), bare_epoch(warm_up)
    sides = {"framework": framework_epoch, "bare": bare_epoch}
    wall = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    load = [os.getloadavg()[0]]
    for run in range(rounds):  # interleaved, each side first in turn: drift hits both alike
        for name in sorted(sides, reverse=run % 2 == 1):
            start_cpu = time.process_time()
            wall[name].append(_timed(lambda: sides[name](loader)))  # noqa: B023
            cpu[name].append(time.process_time() - start_cpu)
        load.append(os.getloadavg()[0])
    n = len(decoded)
    framework, bare = min(wall["framework"]), min(wall["bare"])
    return {
        "images": n,
        "input_px": input_px,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_1min": f"{min(load):.1f}-{max(load):.1f}",
        "framework_epoch_s": framework,
        "bare_epoch_s": bare,
        "framework_img_s": n / framework,
        "bare_img_s": n / bare,
        "cpu_s_ratio": min(cpu["bare"]) / min(cpu["framework"]),
        "ratio": bare / framework,
    }


def run_section(name: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"ltl-bench-{name}-") as tmp:
        result = globals()[f"section_{name}"](Path(tmp))
    usage = [
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    result["peak_rss_mib"] = max(usage) / 1024
    return result


def _markdown(results: dict[str, dict], seconds: float) -> str:
    lines = [
        "## `make bench`: the pipeline against its limits",
        "",
        f"Measured by `python benchmarks/speed.py` (`make bench`) on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU, "
        f"{time.strftime('%Y-%m-%d')}; the embedded data set (420 images, 224 px), default "
        f"backbone tf_efficientnet_lite0. The whole benchmark took {seconds:.0f} s.",
        "",
        "| | what | measured | ratio | goal | met | peak RSS (f) |",
        "|---|---|---|--:|--:|---|--:|",
    ]
    for name, r in results.items():
        what, goal, met = GOALS[name]
        verdict = "—" if met is None else ("yes" if met(r["ratio"]) else "no")
        details = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r.items()
            if k not in {"ratio", "peak_rss_mib"}
        )
        lines.append(
            f"| {name} | {what} | {details} | {r['ratio']:.2f} | {goal} | "
            f"{verdict} | {r['peak_rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=list(GOALS))  # g only when asked: it needs a GPU
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument(
        "--heads-only",
        action="store_true",
        help="b and d: time the heads launcher only, not the basic / joblib one beside it",
    )
    args = parser.parse_args()
    if args.heads_only:  # also for the sections' own processes
        os.environ["LTL_BENCH_HEADS_ONLY"] = "1"
        global BASELINES
        BASELINES = False
    if args.section:
        print(json.dumps(run_section(args.section)))
        return
    start, results = time.perf_counter(), {}
    for name in SECTIONS:
        done = subprocess.run(
            [sys.executable, __file__, "--section", name],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            name,
            GOALS[name][0],
            f"{results[name]['ratio']:.2f}",
            "goal",
            GOALS[name][1],
            flush=True,
        )
    report = _markdown(results, time.perf_counter() - start)
    replace_section(args.out, "speed", report + _NOTES)
    print(report)


_NOTES = """
### How each figure is measured

- **a** `LandmarkDataModule.setup()` with the packaged backbone and an empty feature cache:
  scan and verify every image, digest the files, decode and resize once, run the backbone,
  write the cache; against `extract_features` on random uint8 tensors of the same shape
  and count (the bare timm forward, the limit).
- **b** `python -m landmark_tl.train -m experiment=study_table1` (24 runs) with an empty
  feature cache, with the heads launcher (`hydra/launcher=heads extras.plots=false`; the
  ratio) and with the basic launcher (`basic_ratio`), against the pipeline time of **a**
  (one feature pass over all images; the default `augment=none` has one view per image).
- **c** one `Trainer.fit` epoch of `multi_output` on cached features against one epoch
  that runs the frozen backbone on the decoded images (`features.cache=false`).
- **d** `-m sweep=study_grid` (27 points) with the heads launcher (the ratio; 3 groups of
  9 by batch size) and with `hydra/launcher=joblib` (`joblib_ratio`, 2 processes here),
  against one `python -m landmark_tl.train`, each with an empty feature cache.
- **e** training steps of the unfrozen backbone + heads (batch 16, `augment=random`, images
  streamed: decoded per step in the loading loop's workers, and augmented) against the same steps
  on one ready batch; rounds are interleaved so that drift affects both alike.
- **h** one epoch fine-tuning the whole default backbone (`backbone.freeze=none`,
  `backbone.input_size=[3,128,128]`, `multi_output`, batch 32, the default Adam and label
  smoothing) over the embedded set's training split, decoded once into uint8 tensors that
  both sides read through the same `DataLoader`: the framework's Trainer as a run builds it
  (`landmark_tl.training.fit.build_trainer`: checkpoints, CSV log, callbacks, per-step metrics)
  against a plain loop over a copy of the same timm model and heads with an optimiser of
  the same class and parameter groups; epochs interleaved, each side first in turn, the
  fastest of 2 each after a 2-batch warm-up (`cpu_s_ratio`: the same from CPU seconds).
- **s** heads-launcher sweeps of 9 (lr x dropout), 27 (study_grid) and 81 (study_grid x 3
  seeds) points on a warm cache: `per_point_s` = (t81 - t9) / 72, the cost of one more
  point; the ratio divides it by one single run.
- **f** `ru_maxrss` of the section's process and its children.

### Where the time goes (b, d)

With a frozen backbone the one feature pass is the floor. With the basic or joblib
launcher every run then pays fixed costs that do not shrink with the data: the imports of
a process, a `Trainer.fit` per stage (about 5 ms per optimisation step of a tiny head, 40
epochs), testing and validating the best checkpoint, three PNG plots, and the run dir
files. The heads launcher removes the per-run fixed costs: one process, one data set-up
per group, one vectorised loop per stage for all members (stacked parameters, fused Adam),
no plots in sweeps. What remains is the heads' arithmetic itself (a 1280 x 512 trunk per
member: forward, backward and Adam over 0.66 M weights per step), which grows with the
number of members; on 2 shared CPU cores it is the larger part of b and d.
"""

if __name__ == "__main__":
    main()

"""The heads launcher: grouping, batched fits equal to separate runs, divergence, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import landmark_tl.sweep.group_data as group_data
from landmark_tl.commands.report import main as report_main
from landmark_tl.core.threads import torch_threads
from landmark_tl.data.features.store import FeatureRows
from landmark_tl.models.backbone import create_backbone
from landmark_tl.runs.rundir import read_predictions
from landmark_tl.sweep.group import FAILED_FILE, Member, MemberFailed, run_group
from landmark_tl.sweep.grouping import GroupError, check_group, group_jobs, unbatchable_reason
from landmark_tl.sweep.launch import train_batches
from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

SHORT = [
    "strategy.stages.landmark.epochs=3",
    "strategy.stages.category.epochs=2",
    "strategy.stages.joint.epochs=3",
]
# Tiny heads and probes run fastest on one torch thread (see torch_threads); also in the
# subprocesses
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
PROBE_GRID = "strategy.l2_grid=[0.1,10.0]"  # probes: two strengths to choose from
HEAD_APPROACHES = [
    "multi_output",
    "head_swap_category_first",
    "head_swap_landmark_first",
    "feature_chain_category_first",
    "feature_chain_landmark_first",
    "hierarchical",
    "linear_probe",  # fitted once for the group: the fit does not depend on the seed
    "hierarchical_probe",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed random backbone weights: with ``weights=none`` the seed would pick the backbone
    (and so the features), and runs of different seeds could not share a batch."""
    torch.manual_seed(0)
    backbone = create_backbone(weights="none", input_size=(3, 64, 64))
    path = tmp_path_factory.mktemp("weights") / "backbone.pth"
    torch.save(backbone.model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heads-cache")


@pytest.fixture
def config_args(tiny_tree: Path, feature_cache: Path, weights_file: Path):
    def make(*overrides: str) -> list[str]:
        return [
            *TINY_OVERRIDES,
            f"data.root={tiny_tree}",
            f"paths.cache_dir={feature_cache}",
            "head.hidden=[32]",
            "backbone.weights=file",
            f"backbone.weights_file={weights_file}",
            "extras.plots=false",
            *SHORT,
            *overrides,
        ]

    return make


def _agreement(a: Path, b: Path) -> tuple[float, dict[str, float]]:
    """Share of test images with the same predictions in both runs, and |ΔF1| per task."""
    pa, pb = read_predictions(a / "predictions.csv"), read_predictions(b / "predictions.csv")
    assert pa.paths == pb.paths
    same = [all(pa.pred[t][i] == pb.pred[t][i] for t in pa.pred) for i in range(len(pa.paths))]
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    delta = {t: abs(ma["test"][t]["macro_f1"] - mb["test"][t]["macro_f1"]) for t in ma["test"]}
    return sum(same) / len(same), delta


def test_jobs_group_by_shared_features_and_head_structure(config_args):
    configs = [
        compose_config(*config_args("seed=0")),
        compose_config(*config_args("seed=1", "strategy.lr=0.01", "head.dropout=0.3")),
        compose_config(*config_args("data.batch_size=4")),  # another batch size
        compose_config(*config_args("+approach=linear_probe")),  # fits in closed form
        compose_config(*config_args("backbone.freeze=none")),  # the backbone trains
        compose_config(*config_args("+approach=hierarchical", "seed=3")),
        compose_config(*config_args("head.hidden=[16]")),  # other head layers
        compose_config(*config_args("+approach=linear_probe", "seed=2")),
        compose_config(*config_args("data.sampler=balanced")),
    ]
    groups, alone = group_jobs(configs)
    assert groups == [[0, 1], [2], [3, 7], [5], [6]]
    assert alone == [4, 8]
    assert "backbone trains" in unbatchable_reason(configs[4])
    assert "data.sampler=balanced" in unbatchable_reason(configs[8])


def test_only_the_default_csv_log_joins_a_batch(config_args):
    assert unbatchable_reason(compose_config(*config_args())) is None
    moved = compose_config(*config_args("logger.csv.run_args.name=elsewhere"))
    assert "trackers beside the CSV log" in unbatchable_reason(moved)


def test_a_group_whose_members_disagree_is_refused_naming_the_key(config_args):
    configs = [compose_config(*config_args()), compose_config(*config_args("data.batch_size=4"))]
    with pytest.raises(GroupError, match=r"data\.batch_size: member 0 has 8, member 1 has 4"):
        check_group(configs)
    seeds = [compose_config(*config_args(f"seed={s}", "backbone.weights=none")) for s in (0, 1)]
    with pytest.raises(GroupError, match="agree on seed"):  # a random backbone per seed
        run_group([Member(c, Path("unused")) for c in seeds])


@pytest.mark.parametrize("approach", HEAD_APPROACHES)
def test_batched_members_match_separate_runs(approach, config_args, tmp_path):
    """Same seeds: the same test predictions (>= 99% of images) and |ΔF1| <= 0.005."""
    variants = [
        ["seed=0", "strategy.stages.category.patience=1"],
        ["seed=1", "head.dropout=0.3", "strategy.lr=0.003"],
    ]
    grid = [PROBE_GRID] if approach.endswith("probe") else []
    configs = [compose_config(*config_args(f"+approach={approach}", *grid, *v)) for v in variants]
    for i, config in enumerate(configs):
        train(config, tmp_path / f"separate{i}")
    results = run_group([Member(c, tmp_path / f"batched{i}") for i, c in enumerate(configs)])
    assert all(isinstance(r, dict) for r in results)
    shared = approach.endswith("probe")
    assert [r["head_batch"] for r in results] == [{"members": 2, "shared_fit": shared}] * 2
    for i in range(len(configs)):
        same, delta = _agreement(tmp_path / f"separate{i}", tmp_path / f"batched{i}")
        assert same >= 0.99
        assert max(delta.values()) <= 0.005
        separate, batched = (
            json.loads((tmp_path / f"{kind}{i}" / "metrics.json").read_text())
            for kind in ("separate", "batched")
        )
        assert batched["fingerprint"] == separate["fingerprint"]
        assert [s["epochs"] for s in batched["stages"]] == [s["epochs"] for s in separate["stages"]]
        for stage in batched["stages"]:
            run = tmp_path / f"batched{i}"
            checkpoint = torch.load(
                run / "checkpoints" / f"{stage['name']}-best.ckpt", weights_only=False
            )  # as a separate run's: the frozen backbone named, not stored
            assert "frozen_backbone" in checkpoint
            assert not any(k.startswith("backbone.") for k in checkpoint["state_dict"])
            assert (run / "logs" / stage["name"] / "metrics.csv").is_file()


@pytest.mark.parametrize("approach", ["multi_output", "linear_probe"])
def test_features_over_the_memory_budget_are_read_from_the_store_with_the_same_results(
    approach, config_args, tmp_path, monkeypatch
):
    """features.memory_mb=0: no split fits, so heads step on minibatches read from the
    mapped rows and the probe reads them a chunk at a time; results as in memory."""
    reads: list[int] = []
    gather = FeatureRows._gather
    monkeypatch.setattr(FeatureRows, "_gather", lambda s, i: reads.append(len(i)) or gather(s, i))
    grid = [PROBE_GRID] if approach.endswith("probe") else []
    largest = {}
    for budget in ("64", "0"):
        reads.clear()
        args = (f"+approach={approach}", *grid, "head.dropout=0.3", f"features.memory_mb={budget}")
        [result] = run_group([Member(compose_config(*config_args(*args)), tmp_path / budget)])
        assert isinstance(result, dict)
        largest[budget] = max(reads)
    assert largest == {"64": 12, "0": 8}  # the whole train split (12) at once; 8 at a time
    same, delta = _agreement(tmp_path / "64", tmp_path / "0")
    assert same == 1.0 and max(delta.values()) <= 1e-6


def test_a_diverging_member_fails_alone(config_args, tmp_path):
    configs = [
        compose_config(*config_args("seed=0")),
        compose_config(*config_args("seed=1", "strategy.lr=1e30")),  # diverges at once
    ]
    results = run_group([Member(c, tmp_path / str(i)) for i, c in enumerate(configs)])
    assert isinstance(results[0], dict)
    assert (tmp_path / "0" / "metrics.json").is_file()
    assert isinstance(results[1], MemberFailed)
    assert "diverged" in str(results[1])
    failed = json.loads((tmp_path / "1" / FAILED_FILE).read_text())
    assert failed["stage"] == "joint" and "diverged" in failed["error"]
    assert not (tmp_path / "1" / "metrics.json").exists()


def test_batches_trained_at_once_match_one_at_a_time(config_args, tmp_path, monkeypatch):
    """Two batches in two threads (the launcher's ``workers``) give what each gives alone;
    reading the same data, they set it up once."""
    args = {"multi_output": [], "hierarchical_probe": [PROBE_GRID]}

    def batches(root: Path) -> dict[tuple[int, ...], list[Member]]:
        return {
            (2 * b, 2 * b + 1): [
                Member(
                    compose_config(*config_args(f"+approach={a}", *extra, f"seed={s}")),
                    root / f"{a}{s}",
                )
                for s in (0, 1)
            ]
            for b, (a, extra) in enumerate(args.items())
        }

    setups = []
    prepare = group_data.prepare_group_data
    monkeypatch.setattr(group_data, "prepare_group_data", lambda c: setups.append(c) or prepare(c))
    at_once = train_batches(batches(tmp_path / "at_once"), threads=1, workers=2)
    assert len(setups) == 1
    alone = [run_group(members) for members in batches(tmp_path / "alone").values()]
    assert len(setups) == 3  # without a shared set-up, one per group
    assert [[r["test"] for r in b] for b in at_once] == [[r["test"] for r in b] for b in alone]
    for run in (tmp_path / "alone").iterdir():
        same, delta = _agreement(run, tmp_path / "at_once" / run.name)
        assert same == 1.0 and max(delta.values()) == 0.0


KILLER = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
from pathlib import Path
from landmark_tl.sweep import vectorised
from landmark_tl.sweep.group import Member, run_group
from tests.conftest import compose_config

epochs = {"n": 0}
train_epoch = vectorised.VectorisedStage._train_epoch
def killing(self, *args, **kwargs):
    if self.stage == "category":
        epochs["n"] += 1
        if epochs["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-way through the second stage
    return train_epoch(self, *args, **kwargs)
vectorised.VectorisedStage._train_epoch = killing
out = Path(sys.argv[1])
args = sys.argv[2:]
run_group([Member(compose_config(*args, f"seed={s}"), out / str(s)) for s in (0, 1)])
"""


def test_a_killed_batched_fit_resumes_every_unfinished_member(config_args, tmp_path, monkeypatch):
    args = config_args("+approach=head_swap_landmark_first")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=ONE_THREAD,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    runs = [tmp_path / "runs" / str(s) for s in (0, 1)]
    for run in runs:  # stage 1 saved, stage 2 interrupted, no result yet
        assert (run / "stages" / "landmark.pt").is_file()
        assert not (run / "stages" / "category.pt").exists()
        assert not (run / "metrics.json").exists()

    from landmark_tl.sweep import vectorised

    trained = []
    run = vectorised.VectorisedStage.run

    def recording(self, *a, **k):
        trained.append(self.stage)
        return run(self, *a, **k)

    monkeypatch.setattr(vectorised.VectorisedStage, "run", recording)
    resumed = run_group(
        [Member(compose_config(*args, f"seed={s}", "resume=true"), runs[s]) for s in (0, 1)]
    )
    assert trained == ["category"]  # the finished stage was restored, not trained again
    assert all(isinstance(r, dict) for r in resumed)
    whole = run_group(
        [Member(compose_config(*args, f"seed={s}"), tmp_path / "whole" / str(s)) for s in (0, 1)]
    )
    for s in (0, 1):
        same, delta = _agreement(runs[s], tmp_path / "whole" / str(s))
        assert same == 1.0 and max(delta.values()) == 0.0
        assert resumed[s]["test"] == whole[s]["test"]


def heads_multirun(
    sweep: Path, *overrides: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python -m landmark_tl.train -m hydra/launcher=heads`` into ``sweep`` on one
    thread: the finished process and its stdout + stderr."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "landmark_tl.train",
            "-m",
            "hydra/launcher=heads",
            f"hydra.sweep.dir={sweep}",
            *overrides,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**ONE_THREAD, **(env or {})},
    )
    return done, done.stdout + done.stderr


def test_launcher_runs_a_multirun_batched_and_alone(config_args, tmp_path):
    """``hydra/launcher=heads`` end to end: a probe fitted once for both seeds, the jobs
    that cannot batch (a balanced sampler) run as usual; every job has its run dir
    (Hydra's files included); plots left out of the sweep are drawn by
    ``report run_plots=true``."""
    sweep = tmp_path / "sweep"
    args = config_args()
    done, output = heads_multirun(
        sweep,
        *args,
        "+approach=hierarchical_probe",
        PROBE_GRID,
        "seed=0,1",
        "data.sampler=none,balanced",
    )
    assert done.returncode == 0, output[-3000:]
    assert "head batch of 2 jobs: #0, #2" in output
    assert "#1 : " in output and "(runs alone: data.sampler=balanced)" in output
    for job in range(4):
        assert (sweep / str(job) / ".hydra" / "overrides.yaml").is_file()
        assert (sweep / str(job) / "metrics.json").is_file()
        assert not (sweep / str(job) / "plots").exists()
    separate = tmp_path / "separate"  # seed 1's probe, fitted once with seed 0's
    train(compose_config(*args, "+approach=hierarchical_probe", PROBE_GRID, "seed=1"), separate)
    same, delta = _agreement(sweep / "2", separate)
    assert same == 1.0 and max(delta.values()) == 0.0
    assert report_main([f"runs={sweep}", "bootstrap=20", "run_plots=true"]) == 0
    assert (sweep / "0" / "plots" / "curves_landmark.png").is_file()


def test_launcher_runs_every_point_and_lists_the_failures(config_args, tmp_path):
    """A bad value (nan, -1) fails its job alone, before any batch; a diverging one fails
    its batch member alone; the good point finishes; the multirun exits 1 listing each
    failure on one line, with no traceback."""
    sweep = tmp_path / "sweep"
    done, output = heads_multirun(
        sweep, *config_args(), "strategy.lr=0.001,nan,-1,1e30", env={"HYDRA_FULL_ERROR": ""}
    )
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "3 job(s) of the multirun failed" in output
    assert f"#1 {sweep / '1'}: invalid configuration: strategy.lr=nan: must be a finite" in output
    assert f"#2 {sweep / '2'}: invalid configuration: strategy.lr=-1.0: must be a finite" in output
    assert f"#3 {sweep / '3'}: stage joint: the training loss became nan" in output
    assert "(diverged); lower strategy.stages.joint.lr=1e+30 (or strategy.lr" in output
    assert (sweep / "0" / "metrics.json").is_file()
    assert (sweep / "0" / ".hydra" / "overrides.yaml").is_file()
    for job in (1, 2, 3):
        assert (sweep / str(job) / FAILED_FILE).is_file()
        assert not (sweep / str(job) / "metrics.json").exists()

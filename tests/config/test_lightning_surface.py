"""The open Lightning surface: loggers, callbacks, Trainer pass-through, monitor, debug."""

from __future__ import annotations

import json

import lightning as L
import pytest
from hydra.errors import MissingConfigException
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from landmark_tl.commands.export import main as export_main
from landmark_tl.config.lightning import Monitor, trainer_arguments
from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.core.errors import UsageError
from landmark_tl.models.strategies.stages import StageConfig
from landmark_tl.training import loggers as loggers_module
from landmark_tl.training.fit import build_trainer
from landmark_tl.training.loggers import RunLoggers
from landmark_tl.training.run import train
from tests.conftest import compose_config


class RecordTrainer(L.Callback):
    """A user's own callback (built from its _target_): records what each fit saw."""

    seen: list[dict] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordTrainer.seen.append(
            {
                "fast_dev_run": trainer.fast_dev_run,
                "gradient_clip_val": trainer.gradient_clip_val,
                "monitor": trainer.checkpoint_callback.monitor,
            }
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        RecordTrainer.seen[-1]["batches"] = batch_idx + 1


@pytest.mark.slow
def test_trackers_record_the_run_in_mlflow_sqlite_and_tensorboard(tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "out"
    sweep = out / "multiruns" / "sweep-1"  # a multirun: one experiment named after it
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    overrides = ["strategy.lr=0.01", "seed=3"]
    config = tiny_config("logger=[csv,tensorboard,mlflow]", f"paths.output_dir={out}", *overrides)
    metrics = train(config, sweep / "0", overrides)

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-1")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params  # the whole resolved config, flattened
    assert params["strategy.lr"] == "0.01" and params["seed"] == "3"
    assert params["data.batch_size"] == "8" and params["backbone.name"] == config.backbone.name
    assert params["strategy.stages.joint.epochs"] == "2" and params["optim.optimizer"]
    assert params["approach"] == "multi_output" and params["overrides"] == "strategy.lr=0.01 seed=3"
    landmark_f1 = metrics["test"]["landmark"]["macro_f1"]
    assert run.data.metrics["test/landmark/macro_f1"] == pytest.approx(landmark_f1)
    assert run.data.metrics["val/category/accuracy"] == pytest.approx(
        metrics["val"]["category"]["accuracy"]
    )
    history = client.get_metric_history(run.info.run_id, "joint/val/loss")
    assert len(history) == 2  # the stage's two epochs: <stage>/<split>/<metric>
    (again,) = client.get_metric_history(run.info.run_id, "joint/best_checkpoint/val/loss")
    assert again.value == pytest.approx(metrics["stages"][0]["best_val_loss"])
    assert run.info.artifact_uri.startswith((out / "mlartifacts").as_uri())  # not ./mlruns
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "predictions.csv", "plots", "train.log"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "plots")
    assert not (tmp_path / "mlruns").exists()
    assert export_main([f"run={sweep / '0'}", "format=torchscript"]) == 0  # added later
    exported = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert exported == {"export/model.pt", "export/labels.json"}

    events = sweep / "0" / "tensorboard" / "joint"
    scalars = EventAccumulator(str(events)).Reload()
    assert {"train/loss", "val/loss", "val/landmark_f1"} <= set(scalars.Tags()["scalars"])
    assert len(scalars.Scalars("val/loss")) == 2  # no re-validation point on the curve
    assert len(scalars.Scalars("best_checkpoint/val/loss")) == 1
    assert "data.batch_size: 8" in (events / "hparams.yaml").read_text()
    summary = EventAccumulator(str(sweep / "0" / "tensorboard" / "run")).Reload()
    content = summary.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["data.batch_size"].number_value == 8
    assert hparams["strategy.lr"].number_value == pytest.approx(0.01)
    assert summary.Scalars("test/landmark/macro_f1")[0].value == pytest.approx(landmark_f1)
    assert (sweep / "0" / "logs" / "joint" / "metrics.csv").is_file()  # csv still there


@pytest.mark.slow
def test_fast_dev_run_through_debug_fdr_with_a_user_callback(tiny_config, tmp_path):
    RecordTrainer.seen = []
    config = tiny_config(
        "debug=fdr",
        f"+callbacks.record._target_={__name__}.RecordTrainer",
        "data.batch_size=4",
        "strategy.stages.joint.epochs=5",
    )
    metrics = train(config, tmp_path / "run")
    assert RecordTrainer.seen == [
        {"fast_dev_run": True, "gradient_clip_val": None, "monitor": "val/f1", "batches": 1}
    ]
    assert metrics["stages"][0]["best_score"] is None  # fast_dev_run keeps no checkpoint
    assert metrics["stages"][0]["epochs"] == 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["landmark"]["n"] == 4  # one test batch of the 8 test images
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


def test_trainer_keys_and_callbacks_reach_the_stage_trainer(tmp_path):
    config = compose_config(
        "trainer=cpu",
        "+trainer.gradient_clip_val=0.5",
        "+trainer.accumulate_grad_batches=2",
        "+trainer.limit_train_batches=3",
        "+trainer.enable_model_summary=true",
        "callbacks=[lr_monitor]",
        "strategy.monitor=val/landmark_f1",
    )
    from landmark_tl.config.lightning import build_callbacks

    monitor = Monitor.resolve(config.strategy.monitor, config.strategy.monitor_mode)
    trainer = build_trainer(
        "joint",
        StageConfig(epochs=4, lr=1e-3, patience=2),
        tmp_path,
        monitor=monitor,
        callbacks=build_callbacks(config.callbacks),
        **trainer_arguments(config.trainer),
    )
    assert trainer.gradient_clip_val == 0.5 and trainer.accumulate_grad_batches == 2
    assert trainer.limit_train_batches == 3 and trainer.max_epochs == 4
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    checkpoint, last = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert trainer.checkpoint_callback is checkpoint and last.monitor is None  # every epoch
    (stopping,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (checkpoint.monitor, checkpoint.mode) == ("val/landmark_f1", "max")
    assert (stopping.monitor, stopping.mode, stopping.patience) == ("val/landmark_f1", "max", 2)


@pytest.mark.slow
def test_a_monitored_score_picks_the_checkpoint_and_is_recorded(tiny_config, tmp_path):
    config = tiny_config("strategy=head_swap", "strategy.monitor=val/f1")
    metrics = train(config, tmp_path / "run")
    assert [s["monitor"] for s in metrics["stages"]] == ["val/f1", "val/f1"]
    first = metrics["stages"][0]
    assert metrics["val"]["landmark"]["macro_f1"] == pytest.approx(first["best_score"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("logger=nope", "logger/nope"),
        ("callbacks=nope", "callbacks/nope"),
    ],
)
def test_unknown_group_names_fail_at_compose(override, message):
    with pytest.raises(UsageError, match=message) as info:
        compose_config(override)
    assert isinstance(info.value.__cause__, MissingConfigException)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+callbacks.mine._target_=no_such_module.Callback",
            "callbacks.mine._target_=no_such_module.Callback cannot be imported",
        ),
        ("+callbacks.mine._target_=collections.OrderedDict", "is not a Callback"),
        (
            "+trainer.gradient_clip=1",
            "trainer.gradient_clip: .*did you mean trainer.gradient_clip_val",
        ),
        ("+trainer.max_epochs=3", "strategy.stages.<stage>.epochs"),
        ("strategy.monitor=loss", "strategy.monitor=loss"),
        ("strategy.monitor_mode=up", "strategy.monitor_mode=up"),
    ],
)
def test_bad_lightning_settings_fail_at_start_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(override))


def test_a_monitor_some_stage_does_not_log_is_refused_before_fitting(tiny_config, tmp_path):
    config = tiny_config("strategy=head_swap", "strategy.monitor=val/landmark_f1")
    with pytest.raises(ValueError, match="stage 'category' .* does not log it"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unreachable_tracking_uri_fails_before_any_work(tiny_config, tmp_path):
    config = tiny_config(
        "logger=[csv,mlflow]", "logger.mlflow.tracking_uri=http://127.0.0.1:9", "trainer=cpu"
    )
    with pytest.raises(ValueError, match=r"logger.mlflow.tracking_uri=http://127.0.0.1:9"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "split.csv").exists()


def test_a_tracker_without_its_package_is_refused_naming_the_extra(monkeypatch, tmp_path):
    real = loggers_module.importlib.util.find_spec
    monkeypatch.setattr(
        loggers_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real(name, *a),
    )
    config = compose_config("logger=[csv,wandb]")
    with pytest.raises(ValueError, match=r"logger.wandb needs the wandb package.*\[wandb\]"):
        RunLoggers(config.logger, tmp_path, tmp_path)


def test_a_logger_target_that_is_not_a_logger_is_refused(tmp_path):
    with pytest.raises(ValueError, match="logger.mine._target_=Path is not a Lightning Logger"):
        RunLoggers({"mine": {"_target_": "pathlib.Path"}}, tmp_path, tmp_path)


def test_saved_run_config_keeps_trainer_extras(tmp_path):
    from omegaconf import OmegaConf

    from landmark_tl.config.schema import to_train_config

    config = compose_config("+trainer.gradient_clip_val=1.5")
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    assert to_train_config(OmegaConf.load(path)).trainer.extra == {"gradient_clip_val": 1.5}


@pytest.mark.parametrize(
    ("debug", "expected"),
    [
        ("fdr", {"fast_dev_run": True}),
        ("overfit", {"overfit_batches": 3}),
        ("limit", {"limit_train_batches": 5, "limit_val_batches": 3}),
        ("profiler", {"profiler": "simple"}),
    ],
)
def test_debug_configs_compose_into_valid_trainer_arguments(debug, expected):
    config = compose_config(f"debug={debug}")
    validate_config(config)
    arguments = trainer_arguments(config.trainer)
    assert expected.items() <= arguments.items()
    assert arguments["accelerator"] == "cpu" and arguments["detect_anomaly"] is True


def test_the_csv_log_is_on_by_default_and_kept_beside_trackers():
    assert list(compose_config().logger) == ["csv"]  # landmark_tl.compose() too
    assert list(compose_config("logger=[tensorboard,mlflow]").logger) == [
        "csv",
        "tensorboard",
        "mlflow",
    ]
    assert list(compose_config("logger=mlflow", "~logger.csv").logger) == ["mlflow"]

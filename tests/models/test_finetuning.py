"""The unfreeze schedule: which parameters train when, and resuming around the unfreeze."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.splits import SplitSpec
from landmark_tl.models.backbone import create_backbone
from landmark_tl.models.finetuning import UnfreezeSchedule, backbone_blocks, blocks_to_unfreeze
from landmark_tl.models.optim import Recipe, SchedulerName
from landmark_tl.models.strategies import MultiOutput, StageConfig

SCHEDULE = UnfreezeSchedule(unfreeze_at_epoch=1, last_blocks=2, lr_ratio=0.1)


def _module(tiny_tree, schedule=SCHEDULE, freeze_bn=False):
    torch.manual_seed(0)
    backbone = create_backbone(
        "resnet18",
        weights="none",
        input_size=(3, 32, 32),
        freeze="schedule",
        schedule=schedule,
        freeze_bn=freeze_bn,
    )
    dm = LandmarkDataModule(tiny_tree, backbone.preprocessing, split=SplitSpec(1, 2), batch_size=6)
    dm.setup("fit")
    module = MultiOutput(
        backbone, dm.hierarchy, {"joint": StageConfig(epochs=3, lr=1e-2)}, hidden=[8]
    )
    module.begin_stage("joint")
    return module, dm


class _Record(L.Callback):
    """Per epoch, after the schedule acted: trainable backbone blocks and optimiser groups."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        blocks = backbone_blocks(pl_module.backbone.model)
        trainable = [
            i for i, b in enumerate(blocks) if any(p.requires_grad for p in b.parameters())
        ]
        groups = [g["lr"] for g in trainer.optimizers[0].param_groups]
        self.seen.append((trainer.current_epoch, trainable, groups))


def _trainer(tmp_path, epochs, *callbacks):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[*callbacks],
    )


def test_schedule_unfreezes_the_last_blocks_at_the_epoch(tiny_tree, tmp_path):
    module, dm = _module(tiny_tree)
    n_blocks = len(backbone_blocks(module.backbone.model))
    record = _Record()
    _trainer(tmp_path, 3, record).fit(module, datamodule=dm)
    assert record.seen[0][1:] == ([], [1e-2])  # epoch 0: heads only
    last_two = [n_blocks - 2, n_blocks - 1]
    assert record.seen[1][1:] == (last_two, [1e-2, pytest.approx(1e-3)])
    assert record.seen[2][1:] == (last_two, [1e-2, pytest.approx(1e-3)])
    # resnet18's blocks in timm's coarse grouping: stem, layer1 .. layer4
    training = {
        n.split(".")[0] for n, p in module.backbone.model.named_parameters() if p.requires_grad
    }
    assert (n_blocks, training) == (5, {"layer3", "layer4"})


def test_whole_backbone_unfreezes_without_last_blocks(tiny_tree, tmp_path):
    module, dm = _module(tiny_tree, UnfreezeSchedule(unfreeze_at_epoch=2, lr_ratio=0.5))
    record = _Record()
    _trainer(tmp_path, 3, record).fit(module, datamodule=dm)
    n_blocks = len(backbone_blocks(module.backbone.model))
    assert [len(s[1]) for s in record.seen] == [0, 0, n_blocks]
    assert record.seen[2][2] == [1e-2, pytest.approx(5e-3)]


@pytest.mark.parametrize("resume_after_epoch", [0, 1])  # before and after the unfreeze
def test_resume_continues_the_schedule(tiny_tree, tmp_path, resume_after_epoch):
    module, dm = _module(tiny_tree)
    saver = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"
    )
    _trainer(tmp_path, 2, saver).fit(module, datamodule=dm)
    checkpoint = tmp_path / "ckpt" / f"epoch={resume_after_epoch}.ckpt"
    resumed, dm2 = _module(tiny_tree)
    record = _Record()
    _trainer(tmp_path, 3, record).fit(resumed, datamodule=dm2, ckpt_path=checkpoint)
    n_blocks = len(backbone_blocks(resumed.backbone.model))
    epochs = {epoch: (units, groups) for epoch, units, groups in record.seen}
    assert epochs[2] == ([n_blocks - 2, n_blocks - 1], [1e-2, pytest.approx(1e-3)])
    optimizer_state = torch.load(checkpoint, weights_only=False)["optimizer_states"][0]
    assert len(optimizer_state["param_groups"]) == (2 if resume_after_epoch == 1 else 1)


def test_frozen_batch_norm_statistics_stay_fixed(tiny_tree, tmp_path):
    module, dm = _module(tiny_tree, UnfreezeSchedule(unfreeze_at_epoch=0), freeze_bn=True)
    before = module.backbone.model.bn1.running_mean.clone()
    _trainer(tmp_path, 1).fit(module, datamodule=dm)
    assert torch.equal(module.backbone.model.bn1.running_mean, before)
    assert module.backbone.model.conv1.weight.requires_grad


def test_bad_schedules_name_the_key():
    with pytest.raises(ValueError, match="backbone.unfreeze_last_blocks"):
        UnfreezeSchedule(last_blocks=0)
    with pytest.raises(ValueError, match="backbone.lr_ratio"):
        UnfreezeSchedule(lr_ratio=0)


def test_backbone_acts_frozen_before_the_unfreeze(tiny_tree, tmp_path):
    module, dm = _module(tiny_tree, UnfreezeSchedule(unfreeze_at_epoch=5))
    before = {k: v.clone() for k, v in module.backbone.model.state_dict().items()}
    _trainer(tmp_path, 1).fit(module, datamodule=dm)
    after = module.backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics


def test_unfrozen_blocks_get_layer_decayed_groups_in_the_schedule(tiny_tree, tmp_path):
    module, dm = _module(tiny_tree)  # resnet18, its last 2 blocks (layer3, layer4) at epoch 1
    module.recipe = Recipe(layer_decay=0.5, scheduler=SchedulerName.cosine)
    record = _Record()
    _trainer(tmp_path, 2, record).fit(module, datamodule=dm)
    epoch1 = record.seen[1][2]
    heads = epoch1[0]  # where the cosine schedule stands at epoch 1, before its first step
    # timm's fine grouping for the decay: layer4.1 is the last layer (× lr_ratio 0.1),
    # layer4.0, layer3.1, layer3.0 each one below (× 0.5 each)
    scales = [0.0125, 0.025, 0.05, 0.1, 1.0]
    assert sorted(set(epoch1)) == pytest.approx([heads * scale for scale in scales])
    scheduler = module.trainer.lr_scheduler_configs[0].scheduler
    assert len(scheduler.base_values) == len(module.trainer.optimizers[0].param_groups)


def test_blocks_of_the_default_backbone_are_timms_stages():
    """tf_efficientnet_lite0: the stem, then its 7 stages, the head conv joined to the last
    (timm's coarse ``group_matcher``); ``unfreeze_last_blocks=2`` trains stages 5 and 6."""
    model = create_backbone(weights="none").model
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [[names[id(m)] for m in block] for block in backbone_blocks(model)]
    assert blocks == [
        ["conv_stem", "bn1"],
        *[[f"blocks.{i}"] for i in range(6)],
        ["blocks.6", "conv_head", "bn2"],
    ]
    chosen = blocks_to_unfreeze(model, 2)
    unfrozen = {p for block in chosen for p in block.parameters()}
    expected = {p for n, p in model.named_parameters() if n.startswith(("blocks.5", "blocks.6"))}
    assert unfrozen == expected | set(model.conv_head.parameters()) | set(model.bn2.parameters())
    assert blocks_to_unfreeze(model, 8) == blocks_to_unfreeze(model, None) == [model]


def test_blocks_of_a_transformer_and_of_a_model_without_group_matcher():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    blocks = backbone_blocks(vit)  # patch embedding; 12 transformer blocks, norm with the last
    assert len(blocks) == 13
    assert list(blocks[-1]) == [vit.blocks[11], vit.norm]
    # cls_token and pos_embed sit on the model itself: they join with the whole backbone
    assert vit.cls_token not in set(blocks[0].parameters())
    assert vit.cls_token in set(blocks_to_unfreeze(vit, 13)[0].parameters())

    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2))
    )
    assert backbone_blocks(plain) == [plain[0], plain[2][0]]  # the hand grouping

"""Features of a frozen backbone, computed once per image and view."""

from __future__ import annotations

import logging
import time

import torch
from torch.utils.data import DataLoader, Dataset

from landmark_tl.models.backbone import Backbone

log = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(
    backbone: Backbone,
    images: Dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over a dataset of (image, category, landmark); return the three tensors.

    The backbone runs in eval mode on ``device``; features come back as float32 on the CPU.
    """
    was_training = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    feats, cats, lms = [], [], []
    start = time.perf_counter()
    for x, c, lm in loader:
        feats.append(backbone(x.to(device, non_blocking=True)).float().cpu())
        cats.append(c)
        lms.append(lm)
    backbone.train(was_training)
    n = sum(len(f) for f in feats)
    log.info("extracted features of %d images in %.1f s", n, time.perf_counter() - start)
    return torch.cat(feats), torch.cat(cats), torch.cat(lms)

"""What produced a run: package versions, git commit, device and command line.

Recorded in metrics.json (``provenance``) for a reader to reproduce or explain a result;
cosmetic for the run's fingerprint (a run resumes on another device or command line).
"""

from __future__ import annotations

import platform
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from landmark_tl.runs.fingerprint import code_version

PACKAGES = ("timm", "lightning", "torchmetrics", "hydra-core")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None: not installed);
    torch's with its build (e.g. ``+cu130``)."""
    found: dict[str, str | None] = {
        "landmark_tl": code_version()["landmark_tl"],
        "torch": torch.__version__,
    }
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def device_description(accelerator: str) -> str:
    """The device the trainer's ``accelerator`` setting lands on, e.g. ``cuda: NVIDIA H200
    (x1)`` or ``cpu: x86_64, 16 threads``."""
    if accelerator in {"auto", "gpu", "cuda"} and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    mps = getattr(torch.backends, "mps", None)
    if accelerator in {"auto", "gpu", "mps"} and mps is not None and mps.is_available():
        return "mps"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def provenance(accelerator: str) -> dict[str, Any]:
    """The ``provenance`` entry of metrics.json."""
    return {
        "versions": package_versions(),
        "git_commit": code_version()["git"],  # None unless run from a git checkout
        "device": device_description(accelerator),
        "python": platform.python_version(),
        "command": shlex.join(sys.argv),
    }

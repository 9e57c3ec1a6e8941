"""The heads launcher's stacked Adam calls torch's private fused kernels
(``torch._fused_adam_``/``torch._fused_adamw_``, what ``torch.optim.Adam(fused=True)`` runs;
no public API takes a learning rate per slice of one tensor in one pass). This pins the
call: after one and several steps every member's slices equal ``torch.optim.Adam`` /
``AdamW`` run on that member alone, and a torch without the ops fails here, by name."""

from __future__ import annotations

import pytest
import torch

from landmark_tl.models.optim import OptimizerName, Recipe
from landmark_tl.sweep.vectorised import StageSettings, _StackedAdam

# (lr, weight_decay) per member; members 0 and 2 share theirs (one kernel call for both)
MEMBERS = [(1e-2, 0.05), (3e-3, 0.0), (1e-2, 0.05), (1e-3, 0.1)]


def test_torch_still_has_the_private_fused_adam_ops():
    missing = [op for op in ("_fused_adam_", "_fused_adamw_") if not hasattr(torch, op)]
    assert not missing, (
        f"torch {torch.__version__} has no torch.{' / torch.'.join(missing)}, which "
        "landmark_tl/sweep/vectorised.py's _StackedAdam calls: call the public functional "
        "torch.optim.adam.adam(..., fused=True) there instead (it steps its own step "
        "tensors: give it one per member slice)"
    )


def _settings(lr: float, weight_decay: float) -> StageSettings:
    return StageSettings(
        epochs=1,
        lr=lr,
        weight_decay=weight_decay,
        patience=None,
        seed=0,
        loss_weights={},
        dropout=0.0,
    )


@pytest.mark.parametrize("optimizer", [OptimizerName.adam, OptimizerName.adamw])
@pytest.mark.parametrize("steps", [1, 5])
def test_stacked_adam_steps_as_torch_optim_per_member(optimizer, steps):
    torch.manual_seed(0)
    shapes = {"head.weight": (len(MEMBERS), 6, 5), "head.bias": (len(MEMBERS), 6)}
    params = {name: torch.randn(shape) for name, shape in shapes.items()}
    grads = [{name: torch.randn(shape) for name, shape in shapes.items()} for _ in range(steps)]
    members = [{name: value[m].clone() for name, value in params.items()} for m in range(4)]
    start = params["head.weight"].clone()

    stacked = _StackedAdam(
        params, list(shapes), [_settings(*m) for m in MEMBERS], Recipe(optimizer=optimizer)
    )
    for grad in grads:
        stacked.step(grad)

    reference = torch.optim.AdamW if optimizer is OptimizerName.adamw else torch.optim.Adam
    for m, (lr, weight_decay) in enumerate(MEMBERS):
        weight, bias = (torch.nn.Parameter(members[m][n]) for n in shapes)
        alone = reference(  # no weight decay on biases, as timm's parameter groups
            [{"params": [weight], "weight_decay": weight_decay}, {"params": [bias]}],
            lr=lr,
            weight_decay=0.0,
        )
        for grad in grads:
            weight.grad, bias.grad = grad["head.weight"][m], grad["head.bias"][m]
            alone.step()
        torch.testing.assert_close(params["head.weight"][m], weight.detach())
        torch.testing.assert_close(params["head.bias"][m], bias.detach())
        moved = (params["head.weight"][m] - start[m]).abs().max()
        assert moved > 0.5 * lr  # the comparison is not of unchanged weights

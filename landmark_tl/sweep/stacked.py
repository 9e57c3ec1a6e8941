"""Many members' heads as one module: stacked parameters, their forward and loss.

The heads launcher (:mod:`landmark_tl.sweep.vectorised`) stacks the head parameters of
every member along a new first dimension and runs a template member's own
``task_logits`` on them; this module holds what makes that call compute every member at
once (batched linear layers, per-member dropout masks), the per-member loss, and the
moves of rows and member slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from landmark_tl.data.features.store import Rows
from landmark_tl.models.strategies.base import TwoLevelStrategy


class MaskedDropouts:
    """Makes the template compute every member at once on stacked parameters.

    Inside this context the template's ``nn.Linear`` layers take (M, out, in) weights and
    (M, N, in) inputs (one batched matmul), its forward is its ``task_logits`` (the inputs
    are features), and its dropouts multiply by given masks: drawn from each member's own
    generator outside the model (a member without dropout gets masks of ones). Own code,
    not ``torch.func.vmap``: vmapped linear layers measured 2-3x slower here than batched
    matmuls, forward and backward.
    """

    def __init__(self, template: nn.Module) -> None:
        self.template = template
        self.modules = [m for m in template.modules() if isinstance(m, nn.Dropout)]
        self.linears = [m for m in template.modules() if isinstance(m, nn.Linear)]
        self.masks: dict[int, torch.Tensor] | None = None

    def __enter__(self) -> MaskedDropouts:
        # an instance already in place (evaluation inside the training loop) stays: its
        # masks are None between steps, so every dropout is the identity there
        self.patched = [m for m in (*self.modules, *self.linears) if "forward" not in vars(m)]
        for key, module in enumerate(self.modules):
            if module in self.patched:
                module.forward = self._forward(key, module)  # type: ignore[method-assign]
        for module in self.linears:
            if module in self.patched:
                module.forward = stacked_linear(module)  # type: ignore[method-assign]
        self.outer = "forward" not in vars(self.template)
        if self.outer:
            self.template.forward = self.template.task_logits  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.patched:
            del module.forward
        if self.outer:
            del self.template.forward

    def _forward(self, key: int, module: nn.Dropout):  # noqa: ANN202
        def forward(x: torch.Tensor) -> torch.Tensor:
            if self.masks is None or key not in self.masks:  # eval, or fixed in this stage
                return x
            return x * self.masks[key]

        return forward

    def active_widths(self, template: nn.Module, width: int) -> list[tuple[int, int]]:
        """(key, input width) of the dropouts that run in training mode, in the order they
        run (a forward pass of two dummy rows with hooks records it)."""
        order: list[tuple[int, int]] = []
        hooks = [
            module.register_forward_hook(
                lambda mod, args, out, key=key: (
                    order.append((key, args[0].shape[-1])) if mod.training else None
                )
            )
            for key, module in enumerate(self.modules)
        ]
        try:
            with torch.no_grad():
                template(torch.zeros(2, width))
        finally:
            for hook in hooks:
                hook.remove()
        return order


def head_parameters(module: TwoLevelStrategy) -> list[tuple[str, nn.Parameter]]:
    """The parameters outside the backbone, in registration order."""
    return [(n, p) for n, p in module.named_parameters() if not n.startswith("backbone.")]


def member_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-member mean cross-entropy of (M, B, K) logits and (M, B) targets: (M,)."""
    m, b, k = logits.shape
    losses = F.cross_entropy(
        logits.reshape(m * b, k),
        targets.reshape(m * b),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction="none",
    ).reshape(m, b)
    if weight is None:
        return losses.mean(dim=1)
    return losses.sum(dim=1) / weight[targets].sum(dim=1)


def take_rows(x: Rows, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (any shape) of ``x``, on ``index``'s device: indexed in memory, or
    read from the feature store's mapped rows (a minibatch at a time)."""
    if isinstance(x, torch.Tensor):
        return x[index]
    rows = x[index.reshape(-1).cpu().numpy()]
    return rows.reshape(*index.shape, rows.shape[-1]).to(index.device)


def copy_members(
    into: dict[str, torch.Tensor], source: dict[str, torch.Tensor], members: list[int]
) -> None:
    """Copy the slices of ``members`` from ``source`` into ``into``."""
    if not members:
        return
    index = torch.tensor(members, device=next(iter(source.values())).device)
    with torch.no_grad():
        for name, value in source.items():
            into[name].index_copy_(0, index, value.detach().index_select(0, index))


def stacked_linear(module: nn.Linear):  # noqa: ANN202
    """``module``'s forward for stacked (M, out, in) weights and (M, N, in) inputs; its own
    (out, in) weights on (N, in) inputs as usual."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        if weight.ndim == 2:
            return F.linear(x, weight, bias)
        # (W · xᵀ)ᵀ rather than x · Wᵀ: the weights' gradient then comes out contiguous,
        # as the fused Adam kernel reads it (a copy per step and layer otherwise)
        inputs = x.transpose(1, 2)
        if bias is None:
            return torch.bmm(weight, inputs).transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(2), weight, inputs).transpose(1, 2)

    return forward


def dropouts_of(module: nn.Module) -> list[nn.Dropout]:
    return [m for m in module.modules() if isinstance(m, nn.Dropout)]

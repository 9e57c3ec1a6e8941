"""k-nearest neighbours over stored features: cosine similarity and a weighted vote.

DINOv2's kNN classifier (Oquab et al. 2023, ``dinov2/eval/knn.py``) as the reference:
features are L2-normalised, the k most similar training rows vote with weights
softmax(similarity / T) over the k, and a class's score is the sum of its neighbours'
weights (so the scores of an image sum to 1).

The search is an exact chunked matmul with ``torch.topk``, not FAISS: faiss-cpu is a
binary wheel outside this project's dependencies, exact search on 10^5 rows is a few
seconds (docs/benchmarks.md), and torch runs it on whatever device the trainer uses.
Memory stays flat in the number of rows: a query chunk meets one bank chunk at a time and
only the running top k of each query is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from landmark_tl.evaluation.metrics import macro_f1

BANK_CHUNK_ROWS = 8192  # rows of the bank compared with a query chunk at once
QUERY_CHUNK_ROWS = 1024  # queries searched at once when fitting


def normalised(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32)."""
    return F.normalize(x.float(), dim=-1)


def top_k_neighbours(
    queries: torch.Tensor, bank: Iterable[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities (Q, k) and bank row indices (Q, k) of each query's k nearest
    rows, most similar first. ``bank`` yields the rows in order a chunk at a time (a
    tensor counts as one chunk); rows and queries are L2-normalised here."""
    queries = normalised(queries)
    best = torch.full((len(queries), 0), -float("inf"), device=queries.device)
    index = torch.zeros((len(queries), 0), dtype=torch.long, device=queries.device)
    start = 0
    for chunk in [bank] if isinstance(bank, torch.Tensor) else bank:
        for part in chunk.split(BANK_CHUNK_ROWS):
            sims = queries @ normalised(part.to(queries.device)).T
            rows = torch.arange(start, start + len(part), device=queries.device)
            best = torch.cat([best, sims], dim=1)
            index = torch.cat([index, rows.expand(len(queries), -1)], dim=1)
            best, keep = best.topk(min(k, best.shape[1]), dim=1)
            index = index.gather(1, keep)
            start += len(part)
    if start < k:
        raise ValueError(f"k={k}: the bank has only {start} rows")
    return best, index


def weighted_vote(
    sims: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """(Q, C) class scores: the neighbours' weights softmax(sim / T) summed per class."""
    weights = (sims / temperature).softmax(dim=1)
    scores = torch.zeros(len(sims), num_classes, device=sims.device)
    return scores.scatter_add_(1, labels, weights)


class KNNClassifier(nn.Module):
    """A bank of L2-normalised training features with their labels, and the k and T the
    vote uses (buffers: a checkpoint restores the classifier whole)."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("bank", torch.zeros(0, width))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("k", torch.tensor(1))
        self.register_buffer("temperature", torch.tensor(0.07))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        """Take the bank's size from the checkpoint (a new classifier's bank is empty)."""
        for name in ("bank", "labels"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(
        self,
        train: Iterable[torch.Tensor],
        train_labels: torch.Tensor,
        val: Iterable[torch.Tensor],
        val_labels: torch.Tensor,
        k_grid: Sequence[int],
        temperatures: Sequence[float],
    ) -> dict[str, float]:
        """Keep the training rows (normalised) as the bank; choose k and T on validation:
        the highest macro F1, ties to the lower validation cross-entropy, then the smaller k
        and T. One search with the largest k serves every (k, T). ``train`` and ``val``
        yield their rows a chunk at a time. Returns the choice."""
        device = self.bank.device
        self.bank = torch.cat([normalised(c.to(device)) for c in train])
        self.labels = train_labels.to(device).long()
        grid = sorted(k for k in set(k_grid) if k <= len(self.bank))
        if not grid:
            raise ValueError(f"k_grid={list(k_grid)}: every k exceeds the {len(self.bank)} rows")
        if len(val_labels) == 0 or (len(grid) == 1 and len(temperatures) == 1):
            self.k.fill_(grid[0])
            self.temperature.fill_(float(min(temperatures)))
            return {"k": grid[0], "temperature": float(min(temperatures))}
        found = [
            self.search(q.to(device), grid[-1])
            for chunk in val
            for q in chunk.split(QUERY_CHUNK_ROWS)
        ]
        sims = torch.cat([s for s, _ in found])
        labels = torch.cat([lb for _, lb in found])
        val_labels = val_labels.to(device).long()
        best: tuple[tuple[float, float], int, float] | None = None
        for k in grid:
            for t in sorted(temperatures):
                scores = weighted_vote(sims[:, :k], labels[:, :k], self.num_classes, t)
                f1 = macro_f1(scores.argmax(1).cpu(), val_labels.cpu(), self.num_classes)
                loss = float(F.nll_loss(scores.clamp_min(1e-12).log(), val_labels))
                if best is None or (f1, -loss) > best[0]:
                    best = ((f1, -loss), k, t)
        assert best is not None
        self.k.fill_(best[1])
        self.temperature.fill_(best[2])
        return {"k": best[1], "temperature": best[2], "val_macro_f1": best[0][0]}

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and labels of each query's ``k`` nearest bank rows."""
        sims, index = top_k_neighbours(queries, self.bank, k)
        return sims, self.labels[index]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) log class scores of a batch of features (log 1e-12 for a class no
        neighbour votes for, so that a cross-entropy stays finite)."""
        sims, labels = self.search(features, int(self.k))
        scores = weighted_vote(sims, labels, self.num_classes, float(self.temperature))
        return scores.clamp_min(1e-12).log()

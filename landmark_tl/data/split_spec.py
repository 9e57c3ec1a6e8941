"""What a split asks for: :class:`SplitSpec` (val and test images per landmark, the seed,
what happens to small landmarks), checked when it is made.

Apart from the splitting itself (:mod:`landmark_tl.data.splits`, which reads a catalog), so
that the data group's schema (:mod:`landmark_tl.data.config`), which the data sources'
configs extend, does not depend on the catalog that reads those sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum

from landmark_tl.core.errors import UserError


class SplitError(UserError, ValueError):
    """A split cannot be made or read; the message names the folder, key or file and the fix."""


class SmallLandmarks(str, Enum):
    """What happens to a landmark with too few images for its val + test + 1 train image."""

    error = "error"  # refuse the split, listing them
    train_only = "train_only"  # all its images train; it is not scored
    drop = "drop"  # left out of the data set (see landmark_tl.data.longtail)


@dataclass(frozen=True)
class SplitSpec:
    """How many images of each landmark go to val and test; the rest go to train.

    An int is a count per landmark; a float in [0, 1) is a fraction of each landmark's
    images, rounded to the nearest whole image (halves up, in decimal: 0.15 x 10 = 1.5 gives
    2), so a landmark of 4 images at 0.2 gets 1 (0.8) and one of 2 images gets none (0.4).
    Either way every landmark keeps at least one training image: one too small for its val
    and test images is handled as ``small`` says (refused, all in train, or dropped).
    """

    val: int | float = 2
    test: int | float = 3
    seed: int = 0
    small: SmallLandmarks = SmallLandmarks.error

    def __post_init__(self) -> None:
        _check_amount("data.split.val", self.val)
        _check_amount("data.split.test", self.test)
        fractions = isinstance(self.val, float) and isinstance(self.test, float)
        if fractions and self.val + self.test >= 1:
            raise SplitError(
                f"data.split.val + data.split.test = {self.val} + {self.test} >= 1 leaves "
                "no training images; lower the fractions"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SplitError(f"data.split.seed={self.seed!r}: must be an integer")
        if self.small not in set(SmallLandmarks):
            raise SplitError(
                f"data.split.small={self.small!r}: use one of {[p.value for p in SmallLandmarks]}"
            )
        object.__setattr__(self, "small", SmallLandmarks(self.small))

    def counts(self, n: int) -> tuple[int, int]:
        """Number of val and test images for a landmark with ``n`` images."""
        return _amount(self.val, n), _amount(self.test, n)

    def too_small(self, n: int) -> bool:
        """Whether a landmark of ``n`` images cannot give its val, test and one train image."""
        n_val, n_test = self.counts(n)
        return n < n_val + n_test + 1


def _check_amount(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SplitError(
            f"{key}={value!r}: must be an image count (int >= 0) or a fraction (float in [0, 1))"
        )
    if isinstance(value, int) and value < 0:
        raise SplitError(f"{key}={value}: a count cannot be negative; use 0 for none")
    if isinstance(value, float) and not 0 <= value < 1:
        raise SplitError(
            f"{key}={value}: a fraction must be in [0, 1); write a count as an int (e.g. 2)"
        )


def _amount(value: int | float, n: int) -> int:
    """A count as it is; a fraction of ``n`` rounded half up in decimal (0.15 is 0.15,
    not the float just below it)."""
    if isinstance(value, int):
        return value
    return int((Decimal(repr(value)) * n).to_integral_value(rounding=ROUND_HALF_UP))

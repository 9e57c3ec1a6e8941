"""landmark_tl: two-level image classification (category / landmark) by transfer learning.

``load_run(run_dir).predict(images)`` applies a finished run; ``landmark_tl.train.train``
trains from a ``TrainConfig``; the command lines are ``python -m landmark_tl.train``,
``.report``, ``.predict`` and ``.doctor``.
"""

from landmark_tl.inference import load_run

__version__ = "0.1.0"
__all__ = ["load_run"]

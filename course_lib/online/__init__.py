"""Online preference optimisation on language models: one loop, the algorithm is a configuration.

- :mod:`~course_lib.online.algorithms`: the registry (where y and y' come from, which loss);
- :mod:`~course_lib.online.config`: :class:`OnlineConfig`, checked before any work;
- :mod:`~course_lib.online.step`: one step as functions (prompts, pair, labels, loss on h);
- :mod:`~course_lib.online.trainer`: :class:`OnlineTrainer`, the loop that calls them;
- :mod:`~course_lib.online.checkpoint`: resumable, atomic checkpoints and the metrics log.
"""

from course_lib.online.algorithms import (
    ALGORITHMS,
    CONTRASTIVE,
    Algorithm,
    label,
    online_algorithms,
)
from course_lib.online.checkpoint import NonFiniteLoss
from course_lib.online.config import LABEL_KINDS, LR_SCHEDULES, RUN_ONLY_FIELDS, OnlineConfig
from course_lib.online.step import OfflinePair, Pair, step_seed
from course_lib.online.trainer import OnlineTrainer, TrainState

__all__ = [
    "ALGORITHMS",
    "CONTRASTIVE",
    "LABEL_KINDS",
    "LR_SCHEDULES",
    "RUN_ONLY_FIELDS",
    "Algorithm",
    "NonFiniteLoss",
    "OfflinePair",
    "OnlineConfig",
    "OnlineTrainer",
    "Pair",
    "TrainState",
    "label",
    "online_algorithms",
    "step_seed",
]

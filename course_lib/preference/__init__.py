"""Learned preference models for the summarisation task: pairwise, and Bradley-Terry beside it.

The paper labels online samples with a *pairwise* preference model p_phi(y > y'|x) that reads the
prompt and both summaries (Calandriello et al. 2024, §6; NLHF §7), not a scalar reward. A learned
pairwise model is not antisymmetric by construction (notes/paper.md §6.4), so it is symmetrised:

    d(x, y, y') = (f(x, y, y') - f(x, y', y)) / 2,      P_phi(y > y'|x) = sigmoid(d)

which makes P_phi(y > y') + P_phi(y' > y) = 1 (exactly in floating point: see :func:`sym_sigmoid`)
and P_phi(y > y) = 1/2. The Bradley-Terry reward model scores each summary alone, r_phi(x, y),
and sets P = sigmoid(r(x, y) - r(x, y')): it cannot express a preference cycle, which the
non-transitive oracle has.

On the tiny track both are small transformer encoders over the task's word-level tokenizer,
trained on pairs whose labels were drawn from the oracle (as a human rater would label).

The package, by concern:

* :mod:`.model` -- :class:`PMConfig`, :class:`PreferenceModel` (tiny encoder or LoRA backbone);
* :mod:`.examples` -- tokenised labelled pairs, and perturbed pairs to probe for hacking;
* :mod:`.training` -- the loss, :func:`train_preference_model`, :func:`train_for_task`;
* :mod:`.metrics` -- agreement, calibration, confidently wrong pairs;
* :mod:`.storage` -- saving and loading a model folder (replaced whole, atomically);
* :mod:`.cli` -- ``python -m course_lib.preference train``.
"""

from course_lib.preference.examples import (
    PERTURBATIONS,
    Example,
    examples_from_pairs,
    perturbed_pairs,
)
from course_lib.preference.metrics import (
    Calibration,
    agreement,
    bayes_label_agreement,
    calibration,
    confidently_wrong,
    predict,
)
from course_lib.preference.model import (
    PMConfig,
    PreferenceModel,
    backbone_preference_model,
    encode_texts,
    sym_sigmoid,
)
from course_lib.preference.storage import (
    MODEL_FILES,
    check_model_dir,
    default_model_dir,
    load_preference_model,
    save_preference_model,
)
from course_lib.preference.training import (
    TrainReport,
    mean_loss,
    train_for_task,
    train_preference_model,
)

__all__ = [
    "MODEL_FILES",
    "PERTURBATIONS",
    "Calibration",
    "Example",
    "PMConfig",
    "PreferenceModel",
    "TrainReport",
    "agreement",
    "backbone_preference_model",
    "bayes_label_agreement",
    "calibration",
    "check_model_dir",
    "confidently_wrong",
    "default_model_dir",
    "encode_texts",
    "examples_from_pairs",
    "load_preference_model",
    "mean_loss",
    "perturbed_pairs",
    "predict",
    "save_preference_model",
    "sym_sigmoid",
    "train_for_task",
    "train_preference_model",
]

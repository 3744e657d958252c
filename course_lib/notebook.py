"""What the first cell of every notebook calls: seeds, plotting style, quiet logs, a banner."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
import warnings

from course_lib.config import Profile, get_profile


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and (if installed) torch's generators."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (learners call the legacy API too)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def quiet_libraries(profile: Profile) -> None:
    """Library progress bars and info logs are noise in saved outputs; in CI and in the smoke
    profile the course's own training bars (tqdm) are switched off too."""
    quiet = in_ci() or profile.name == "smoke"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    # Environment variables reach transformers when it is imported later; importing it here
    # would cost the numpy-only notebooks seconds.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()  # "Loading weights" bars on every load
    warnings.filterwarnings("ignore", category=FutureWarning)


def banner(profile: Profile) -> str:
    """One line: profile, device, versions."""
    import numpy as np

    parts = [
        f"profile={profile.name}",
        f"python={platform.python_version()}",
        f"numpy={np.__version__}",
    ]
    try:
        import torch

        device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        parts[1:1] = [f"device={device}"]
        parts.append(f"torch={torch.__version__}")
    except ImportError:
        parts[1:1] = ["device=cpu"]
    try:  # the version without the import, which costs seconds
        parts.append(f"transformers={importlib.metadata.version('transformers')}")
    except importlib.metadata.PackageNotFoundError:
        pass
    return "[course] " + " | ".join(parts)


def setup_notebook(seed: int = 0, profile: str | None = None, show: bool = True) -> Profile:
    """Seed every generator, set the course's plotting style, quieten logs, print the banner.

    Returns the active :class:`~course_lib.config.Profile`, from which the notebook reads sizes.
    """
    prof = get_profile(profile)
    quiet_libraries(prof)
    seed_everything(seed)
    from course_lib.plotting import set_style

    set_style()
    if show:
        print(banner(prof))
    return prof

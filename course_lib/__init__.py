"""course_lib: the code behind the course *Online Preference Optimisation: from preference
models to IPO-MD*. The notebooks teach; this package keeps each piece of code once."""

from course_lib.config import Profile, get_profile
from course_lib.llm.quant import quiet_bitsandbytes
from course_lib.notebook import seed_everything, setup_notebook

# bitsandbytes prints a notice about an optional package when peft or transformers import it:
# silence it wherever the course is imported (check-env explains it once).
quiet_bitsandbytes()

__version__ = "0.1.0"
__all__ = ["Profile", "get_profile", "seed_everything", "setup_notebook", "__version__"]

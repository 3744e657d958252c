"""Transitional: the names of the former ``course_lib.models``, now in :mod:`course_lib.llm` and
:mod:`course_lib.logprobs`. Removed once every caller imports from there."""

from course_lib.llm import *  # noqa: F403
from course_lib.llm.embedded import _manifest_ok  # noqa: F401
from course_lib.llm.quant import *  # noqa: F403
from course_lib.logprobs import *  # noqa: F403

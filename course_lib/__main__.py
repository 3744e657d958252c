"""``python -m course_lib ...``: see :mod:`course_lib.commands`."""

import sys

from course_lib.commands import main

if __name__ == "__main__":
    sys.exit(main())

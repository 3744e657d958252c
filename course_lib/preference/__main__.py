"""``python -m course_lib.preference train --out DIR`` (see :mod:`.cli`)."""

from course_lib.preference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

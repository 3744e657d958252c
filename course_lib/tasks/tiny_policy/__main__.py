"""``python -m course_lib.tasks.tiny_policy train --out data/tiny_policy`` (see :mod:`.cli`)."""

from course_lib.tasks.tiny_policy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

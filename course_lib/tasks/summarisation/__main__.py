"""``python -m course_lib.tasks.summarisation build --out data/`` (see :mod:`.cli`)."""

from course_lib.tasks.summarisation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

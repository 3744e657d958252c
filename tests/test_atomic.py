import pytest

from course_lib.atomic import atomic_dir


def test_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "one"  # the old copy survives a failed write
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("two")
    assert (target / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or .old left

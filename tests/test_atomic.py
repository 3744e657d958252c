import os

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


def test_atomic_open_keeps_the_old_file_on_a_crash(tmp_path):
    from course_lib.atomic import atomic_open, atomic_write_text

    path = tmp_path / "a.csv"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only mode


def test_output_dir_rules(tmp_path):
    from course_lib.atomic import MARKER, OutputDirError, check_output_dir, claim_output_dir

    new = tmp_path / "new" / "deeper"
    assert check_output_dir(new, "cmd") == new and not new.exists()  # nothing created
    claim_output_dir(new, "cmd")
    assert (new / MARKER).is_file()
    (new / "result.json").write_text("{}")
    check_output_dir(new, "cmd")  # ours: may write again
    with pytest.raises(OutputDirError, match="holds the output of `cmd`"):
        check_output_dir(new, "other")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputDirError, match="did not write"):
        claim_output_dir(mine, "cmd")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(tmp_path / "file", "cmd")
    with pytest.raises(OutputDirError, match="which is a file"):
        check_output_dir(tmp_path / "file" / "sub", "cmd")
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_dir(empty, "cmd")  # an empty folder is fine


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    from course_lib.atomic import remove_stale_temporaries

    (tmp_path / ".checkpoint-abc").mkdir()
    (tmp_path / ".checkpoint-abc" / "x").write_text("partial")
    (tmp_path / ".metrics.jsonl-1.tmp").write_text("partial")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / ".checkpointer").write_text("not ours")
    removed = remove_stale_temporaries(tmp_path, "checkpoint")
    assert [p.name for p in removed] == [".checkpoint-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".checkpointer",
        ".metrics.jsonl-1.tmp",
        "checkpoint",
    ]

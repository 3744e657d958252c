"""The environment check behind ``python -m course_lib check-env`` and notebook 00.

Every row is a real test, not a lookup: 4-bit is checked by quantising a small layer with
bitsandbytes and running it, the embedded model by loading it and computing one forward pass.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from course_lib.config import get_profile

DIST_NAME = "course-lib"
MIN_PYTHON = (3, 10)


@dataclass
class Row:
    status: str  # "OK", "FAIL", or "--" for an optional part that is absent
    item: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def _requirements() -> list[tuple[str, str, str | None]]:
    """(name, specifier, extra) for every requirement declared in pyproject.toml."""
    from packaging.requirements import Requirement

    try:
        raw = md.requires(DIST_NAME) or []
    except md.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        data = tomllib.loads(pyproject.read_text())["project"]
        raw = list(data["dependencies"])
        for extra, reqs in data.get("optional-dependencies", {}).items():
            raw += [f'{r}; extra == "{extra}"' for r in reqs]
    out = []
    for line in raw:
        req = Requirement(line)
        extra = None
        if req.marker is not None:
            marker = str(req.marker)
            if "extra" in marker:
                extra = marker.split("==")[-1].strip().strip("\"'")
        out.append((req.name, str(req.specifier), extra))
    return out


def check_packages() -> list[Row]:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    rows = []
    seen = set()
    for name, spec, extra in _requirements():
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        label = name if extra is None else f"{name} [{extra}]"
        want = spec or "any"
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            status = "--" if extra else "FAIL"
            note = f"optional, `pip install -e .[{extra}]`" if extra else "pip install -e ."
            rows.append(Row(status, label, f"not installed (required {want}; {note})"))
            continue
        ok = SpecifierSet(spec).contains(Version(have), prereleases=True) if spec else True
        rows.append(Row("OK" if ok else "FAIL", label, f"{have} (required {want})"))
    return rows


def check_python() -> Row:
    ok = sys.version_info[:2] >= MIN_PYTHON
    want = ".".join(map(str, MIN_PYTHON))
    return Row("OK" if ok else "FAIL", "python", f"{platform.python_version()} (required >={want})")


def check_cuda() -> list[Row]:
    try:
        import torch
    except ImportError:
        return [Row("FAIL", "cuda", "torch is not installed")]
    if not torch.cuda.is_available():
        return [
            Row("OK", "cuda", "not available: CPU only (every notebook runs in the cpu profile)")
        ]
    rows = [Row("OK", "cuda", f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)")]
    for i in range(torch.cuda.device_count()):
        prop = torch.cuda.get_device_properties(i)
        rows.append(Row("OK", f"gpu {i}", f"{prop.name}, {prop.total_memory / 2**30:.1f} GiB"))
    return rows


def check_4bit() -> Row:
    """Quantise a 64x32 linear layer to NF4 with bitsandbytes, run it, compare with float32."""
    try:
        import torch

        from course_lib.llm import import_bitsandbytes, keep_standard_nf4_layout

        bnb = import_bitsandbytes()
    except Exception as exc:  # an import of bitsandbytes can fail in many ways
        return Row("FAIL", "4-bit (bitsandbytes NF4)", f"cannot import bitsandbytes: {exc}")
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        gen = torch.Generator().manual_seed(0)
        dense = torch.nn.Linear(64, 32)
        with torch.no_grad():  # seeded weights: the reported error is the same on every run
            dense.weight.copy_(torch.randn(32, 64, generator=gen) * 0.05)
            dense.bias.copy_(torch.randn(32, generator=gen) * 0.05)
        quant = bnb.nn.Linear4bit(64, 32, bias=True, compute_dtype=torch.float32, quant_type="nf4")
        quant.weight = bnb.nn.Params4bit(
            dense.weight.data.clone(), requires_grad=False, quant_type="nf4"
        )
        quant.bias = torch.nn.Parameter(dense.bias.data.clone())
        quant = quant.to(device)
        keep_standard_nf4_layout(quant)  # the course's layout, on every CPU
        dense = dense.to(device)
        x = torch.randn(8, 64, generator=gen).to(device).requires_grad_(True)
        y = quant(x)
        y.sum().backward()  # LoRA training needs gradients through the frozen 4-bit layer
        packed = quant.weight.dtype == torch.uint8 and quant.weight.numel() == 64 * 32 // 2
        err = (y - dense(x)).abs().max().item() / dense(x).abs().max().item()
        ok = packed and err < 0.2 and x.grad is not None and torch.isfinite(x.grad).all()
        detail = (
            f"bitsandbytes {bnb.__version__} on {device}: NF4 layer packed to "
            f"{quant.weight.numel()} bytes, relative error {err:.3f}, backward OK"
        )
        return Row("OK" if ok else "FAIL", "4-bit (bitsandbytes NF4)", detail)
    except Exception as exc:
        return Row("FAIL", "4-bit (bitsandbytes NF4)", f"{type(exc).__name__}: {exc}")


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_4bit_cpu_path() -> Row | None:
    """Which 4-bit path bitsandbytes offers on this CPU, and what its import-time notice means.

    On CPUs with AVX512-BF16, bitsandbytes 0.50.2 (``backends/cpu/ops.py``) tries at import to
    load a faster kernel for its repacked bf16 layout from the optional ``kernels`` package and,
    when that is missing, logs "Failed to load CPU gemm_4bit_forward from kernels-community: No
    module named 'kernels'". The course keeps the standard layout
    (``llm.keep_standard_nf4_layout``), so that kernel would not be used: the notice is
    silenced (``llm.quiet_bitsandbytes``) and explained here. None when bitsandbytes cannot be
    imported (the 4-bit row says so).
    """
    try:
        from course_lib.llm import import_bitsandbytes

        import_bitsandbytes()
        from bitsandbytes.functional import has_avx512bf16
    except Exception:
        return None
    item = "4-bit on this CPU"
    if not has_avx512bf16():
        return Row("OK", item, "no AVX512-BF16: bitsandbytes' standard NF4 kernels, as everywhere")
    detail = (
        "AVX512-BF16, but the standard NF4 kernels run, as on every machine: bitsandbytes' bf16 "
        "repacking is turned off (it drops LoRA gradients)"
    )
    if not _module_available("kernels"):
        detail += (
            ". Its notice 'Failed to load CPU gemm_4bit_forward from kernels-community: No module "
            "named kernels' (silenced) asks for the optional `kernels` package, a faster kernel "
            "for that repacked layout: not needed"
        )
    return Row("OK", item, detail)


def check_embedded_model(load: bool = True) -> Row:
    from course_lib import llm

    item = "embedded model (SmolLM2-135M-Instruct)"
    status = llm.embedded_status()
    if status["gguf"] is None and not status["converted"]:
        return Row("FAIL", item, f"not found. {llm.HOW_TO_GET_EMBEDDED}")
    if not load:
        where = "converted in " + status["cache"] if status["converted"] else status["gguf"]
        return Row("OK", item, f"found: {where}")
    try:
        import torch

        start = time.perf_counter()
        model, tokenizer = llm.load_embedded_default()
        ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
        ok = bool(torch.isfinite(logits).all())
        n = sum(p.numel() for p in model.parameters())
        detail = (
            f"loads from {llm.embedded_cache_path().name} (safetensors), "
            f"{n / 1e6:.0f}M parameters, forward OK, {time.perf_counter() - start:.1f} s"
        )
        return Row("OK" if ok else "FAIL", item, detail)
    except Exception as exc:
        return Row("FAIL", item, f"{type(exc).__name__}: {exc}")


def check_profile() -> Row:
    try:
        prof = get_profile()
    except ValueError as exc:
        return Row("FAIL", "profile", str(exc))
    return Row("OK", "profile", f"{prof.name}: {prof.description}")


def run_checks(load_model: bool = True) -> list[Row]:
    rows = [
        check_python(),
        *check_packages(),
        *check_cuda(),
        check_4bit(),
        *[row for row in [check_4bit_cpu_path()] if row is not None],
        check_embedded_model(load=load_model),
        check_profile(),
    ]
    return rows


def format_table(rows: list[Row]) -> str:
    width = max(len(r.item) for r in rows)
    return "\n".join(f"[{r.status}]".ljust(7) + f"{r.item.ljust(width)}  {r.detail}" for r in rows)


def main(load_model: bool = True) -> int:
    try:  # the loading bars of transformers would interleave with the table
        import transformers

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    rows = run_checks(load_model=load_model)
    print(format_table(rows))
    failed = [r.item for r in rows if r.failed]
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    print("\nAll checks passed.")
    return 0

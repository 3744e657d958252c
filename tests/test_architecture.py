"""The package's shape, checked: no import circles, modules and functions a reader can hold.

Every import of every module counts, those inside functions too (an import moved into a
function to dodge a circle is still a circle to the reader). ``from package import name`` is an
edge to the submodule ``package.name`` when that is a module, else to ``package``.

Size targets (issue 12, after nanoGPT and LLMs-from-scratch): a module of at most about 400
lines, a class of about 200, a function of about 60. The exceptions below say why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "course_lib"

MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 420, 220, 70
# Kept larger on purpose, with the reason a contributor would ask for.
LARGE_MODULES: dict[str, str] = {
    "course_lib.llm.loading": "load_policy and its helpers read in one place: embedded / folder "
    "/ hub, 4-bit skips, LoRA, the reference; split further they would import each other",
    "course_lib.tabular.games": "the regularised game's exact solvers, one family of equations",
    "course_lib.tabular.gradients": "exact and Monte-Carlo gradients of every loss, side by side "
    "as notebook 05 compares them",
    "course_lib.experiments.real": "the real track's run end to end: settings, prompts, the "
    "one-step probe, training, evaluation, the report",
    "course_lib.tasks.world": "data, not logic: the synthetic world's word lists and templates",
    "course_lib.exercises": "the one exercise API every notebook uses: results, cases, "
    "comparison, the checker, tiered hints, solutions",
}
LARGE_FUNCTIONS: dict[str, str] = {
    "course_lib.llm.loading.load_policy": "a 20-line docstring (sources, the reference, devices) "
    "over one straight sequence of loading steps",
    "course_lib.tabular.games.regularised_nash": "a 25-line docstring states the method (Newton, "
    "extragradient fallback, polish) that the body follows",
    "course_lib.experiments.real.RealTrack.estimate": "the one-step probe times each part of a "
    "step in order; split, its parts would pass the same tensors around",
    "course_lib.arena.train.train": "the trainer's set-up and the exact evaluation hook, which "
    "closes over the run's state",
}
LARGE_CLASSES: dict[str, str] = {
    "course_lib.online.trainer.OnlineTrainer": "the loop, its state and checkpoints; each step's "
    "parts are functions of course_lib.online.step",
    "course_lib.experiments.real.RealTrack": "one run of the real track, method by method",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        edges |= {t for t in targets if t in known and t != name}
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ importing its own submodules is how it offers its names; a submodule
    # importing the package would close a circle, and is counted
    assert cycles(graph) == []


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _sizes():
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        yield "module", name, len(path.read_text().splitlines())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                yield "class", f"{name}.{node.name}", node.end_lineno - node.lineno + 1
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                owner = next(
                    (
                        c.name
                        for c in ast.walk(tree)
                        if isinstance(c, ast.ClassDef) and node in c.body
                    ),
                    None,
                )
                qual = f"{name}.{owner}.{node.name}" if owner else f"{name}.{node.name}"
                yield "function", qual, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize(
    "kind, limit, allowed",
    [
        ("module", MODULE_LINES, LARGE_MODULES),
        ("class", CLASS_LINES, LARGE_CLASSES),
        ("function", FUNCTION_LINES, LARGE_FUNCTIONS),
    ],
)
def test_sizes_stay_readable(kind, limit, allowed):
    too_large = {
        name: lines
        for k, name, lines in _sizes()
        if k == kind and lines > limit and name not in allowed
    }
    assert too_large == {}, f"{kind}s over {limit} lines without a stated reason: {too_large}"

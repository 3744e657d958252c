"""Repository-wide pytest set-up: nbval does not compare stderr.

Warnings and progress bars go to stderr and differ between machines and library versions; what a
notebook asserts is on stdout and in its displayed values.
"""

from __future__ import annotations

try:
    from nbval.plugin import IPyNbCell
except ImportError:  # nbval not installed: only the unit tests run
    IPyNbCell = None

if IPyNbCell is not None:
    _compare = IPyNbCell.compare_outputs

    def _without_stderr(outputs):
        return [
            o
            for o in outputs
            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
        ]

    def compare_outputs(self, test, ref, skip_compare=None):
        return _compare(self, _without_stderr(test), _without_stderr(ref), skip_compare)

    IPyNbCell.compare_outputs = compare_outputs

"""Plain-text tables for the benchmark scripts, and the CPU every speed figure names."""

from __future__ import annotations

import platform
from typing import Any


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(columns: list[tuple[str, int, str]], rows: list[list[Any]]) -> None:
    """Print `rows` under a header: columns are (header, width, format spec, e.g. "s", ".1f", ".2e", ".0%");
    text columns are left-aligned, numbers right-aligned; ".2x" prints a ratio as 1.23x."""
    def cell(index: int, text: str, width: int) -> str:
        return f"{text:<{width}s}" if columns[index][2] == "s" else f"{text:>{width}s}"

    header = " ".join(cell(i, name, width) for i, (name, width, _) in enumerate(columns))
    print(header)
    print("-" * len(header))
    for row in rows:
        texts = [
            f"{value:{spec[:-1]}f}x" if spec.endswith("x") else f"{value:{spec}}"
            for value, (_, _, spec) in zip(row, columns)
        ]
        print(" ".join(cell(i, text, width) for i, (text, (_, width, _)) in enumerate(zip(texts, columns))))

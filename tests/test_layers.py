"""The package's layers: every import of another ast_audio package points down, no module imports another's
private names, and no two modules import each other at import time.

Read from the source with `ast` (nothing is imported), so this runs in well under a second.
`python tests/test_layers.py` prints each package's arrows to the others.
"""

from __future__ import annotations

import ast
import collections
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "ast_audio"

# Bottom to top. A package may import its own modules and those of lower layers; two packages of one layer do
# not import each other, except in the first (leaves import nothing of ast_audio but other leaves) and the last
# (the command line's own modules).
LAYERS: list[set[str]] = [
    {"errors", "io_utils", "failures", "allocator", "hub", "runtime", "labels", "printable"},  # shared infrastructure
    {"audio", "answers"},
    {"model", "features"},
    {"checkpoints", "quantize"},
    {"onnx"},
    {"inference", "training"},
    {"jobs"},  # job I/O: output files, locks, resume state, writers, plot, beside the engine
    {"service", "distributed"},
    {"commands", "cli", "__main__"},
]
# Upward arrows by design, each imported inside a function (never at import time), with the reason.
ALLOWED_UPWARD = {
    ("model", "checkpoints"): "ASTPreTrainedModel.from_pretrained / save_pretrained, the Hugging Face API",
}
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
OPEN_LAYERS = {0, len(LAYERS) - 1}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module, e.g. ast_audio.inference.runner
    target: str  # dotted module imported (a submodule when `from package import module`)
    names: tuple[str, ...]  # the names taken from it (empty for `import x`)
    lazy: bool  # inside a function or under `if TYPE_CHECKING:`
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (SOURCE / relative).with_suffix(".py").is_file() or (SOURCE / relative / "__init__.py").is_file()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, lazy: bool):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
            isinstance(child, ast.If) and _type_checking(child))
        yield from _walk(child, inner)


def imports_of(path: Path) -> list[Import]:
    """The ast_audio imports in one source file, relative imports resolved."""
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    found = []
    for node, lazy in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), False):
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, (), lazy, node.lineno)
                      for alias in node.names if alias.name.split(".")[0] == "ast_audio"]
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        if base.split(".")[0] != "ast_audio":
            continue
        names = tuple(alias.name for alias in node.names)
        submodules = [name for name in names if is_module(f"{base}.{name}")]
        found += [Import(importer, f"{base}.{name}", (), lazy, node.lineno) for name in submodules]
        rest = tuple(name for name in names if name not in submodules)
        if rest:
            found.append(Import(importer, base, rest, lazy, node.lineno))
    return found


def all_imports() -> list[Import]:
    return [found for path in sorted(SOURCE.rglob("*.py")) for found in imports_of(path)]


def unit(module: str) -> str | None:
    """The layer unit a module belongs to: its package under ast_audio, or the top-level module's name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package (its lazy table of public names)


def test_every_unit_has_a_layer():
    units = {unit(module_name(path)) for path in SOURCE.rglob("*.py")} - {None}
    assert units - set(RANK) == set(), "new package or top-level module: give it a layer in LAYERS"


def test_imports_point_down_the_layers():
    wrong = []
    for found in all_imports():
        source, target = unit(found.importer), unit(found.target)
        if source is None or target is None or source == target:
            continue
        allowed = (RANK[target] < RANK[source] or (RANK[target] == RANK[source] and RANK[source] in OPEN_LAYERS)
                   or ((source, target) in ALLOWED_UPWARD and found.lazy))
        if not allowed:
            wrong.append(f"{found.importer}:{found.line} imports {found.target} "
                         f"(layer {RANK[source]} -> {RANK[target]})")
    assert not wrong, "\n".join(wrong)


def test_lower_layers_never_import_the_engine_or_front_ends():
    top = {"inference", "service", "distributed", "commands", "training", "cli"}
    low = set().union(*LAYERS[: RANK["inference"]])
    wrong = [f"{found.importer}:{found.line} imports {found.target}" for found in all_imports()
             if unit(found.importer) in low and unit(found.target) in top]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for found in all_imports():
        if found.target == found.importer:
            continue
        private = [name for name in found.names if name.startswith("_") and not name.startswith("__")]
        target_parts = found.target.split(".")
        # A private module (commands/_common.py) is for its own package.
        private_module = any(part.startswith("_") and not part.startswith("__") for part in target_parts)
        same_package = found.target.rpartition(".")[0] == found.importer.rpartition(".")[0]
        if private or (private_module and not same_package):
            wrong.append(f"{found.importer}:{found.line} imports {found.target} {private}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_at_import_time():
    graph = collections.defaultdict(set)
    for found in all_imports():
        if not found.lazy and found.target != found.importer:
            graph[found.importer].add(found.target)
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


if __name__ == "__main__":
    arrows = collections.defaultdict(set)
    for found in all_imports():
        source, target = unit(found.importer), unit(found.target)
        if source and target and source != target:
            arrows[source].add(target + ("" if not found.lazy else " (lazy)"))
    for rank, names in enumerate(LAYERS):
        for name in sorted(names):
            print(f"{rank} {name:12} -> {', '.join(sorted(arrows.get(name, ()))) or '-'}")

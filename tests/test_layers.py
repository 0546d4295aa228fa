"""Imports between the parts of `agent/` point one way: down the layers, never in a cycle.

    cli, progress, demo, demo_world,  the command line and what only it uses
    starter, templates, changes, preview,
    __main__
    daemon, web, metrics, notify      the service shell
    agent (agent.py)                  the composition root: opens and wires everything
    engine, events                    one pass: list, plan, download, record; telling
                                      applications what changed (webhooks, hooks)
    sources                           one module per remote API; vendor JSON stops here
    transfer                          the download contract, retries, pacing, durable files
    state                             the state database
    models, errors, config, log       plain types, the exception tree, settings, logging

A part may import a part of a lower layer, or of its own layer as long as no cycle forms.
`agent/sandbox/` imports nothing from `agent` outside itself (a sandbox sharing code with
the client would hide a bug in both), and only the demo (`demo`, `demo_world`) imports it.
Every import counts: module level, inside functions, and under TYPE_CHECKING alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"
SANDBOX = "sandbox"

LAYERS: Mapping[str, int] = {
    "cli": 7,
    "progress": 7,
    "demo": 7,
    "demo_world": 7,
    "starter": 7,
    "templates": 7,
    "changes": 7,
    "preview": 7,
    "__main__": 7,
    "daemon": 6,
    "web": 6,
    "metrics": 6,
    "notify": 6,
    "agent": 5,
    "engine": 4,
    "events": 4,
    "sources": 3,
    "transfer": 2,
    "state": 1,
    "models": 0,
    "errors": 0,
    "config": 0,
    "log": 0,
    "__init__": 0,  # `from agent import __version__`
}
SANDBOX_USERS = frozenset({"demo", "demo_world"})


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: from which part and file, to which part, on which line."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line} ({self.source} -> {self.target})"


def part_of(module: str, package: str) -> str | None:
    """The top-level part of `package` a dotted module name belongs to (None: outside)."""
    head, _, rest = module.partition(".")
    if head != package:
        return None
    return rest.split(".")[0] if rest else "__init__"


def module_name(path: Path, root: Path, package: str) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = [package, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module an AST imports, relative imports resolved, at any depth of the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from agent import engine` imports agent.engine
                yield f"{base}.{alias.name}", node.lineno


def imports(root: Path, package: str) -> list[Import]:
    """Every import between two different top-level parts of the package at `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root, package)
        source = part_of(module, package)
        assert source is not None
        tree = ast.parse(path.read_text(), str(path))
        seen: set[tuple[str, int]] = set()
        for name, line in imported_modules(tree, module, path.name == "__init__.py"):
            target = part_of(name, package)
            if target is None or target == source or (target, line) in seen:
                continue
            if target != "__init__" and not _exists(root, target):
                continue  # `from agent import __version__`: a name, not a part
            seen.add((target, line))
            found.append(Import(source, target, path, line))
    return found


def _exists(root: Path, part: str) -> bool:
    return (root / part).is_dir() or (root / f"{part}.py").is_file()


def violations(found: list[Import], layers: Mapping[str, int]) -> list[str]:
    """What breaks the rules in the module docstring, one line each."""
    problems = []
    for edge in found:
        if edge.source == SANDBOX:
            problems.append(f"the sandbox imports the client: {edge}")
        elif edge.target == SANDBOX and edge.source not in SANDBOX_USERS:
            problems.append(f"only the demo may import the sandbox: {edge}")
        elif SANDBOX in (edge.source, edge.target):
            continue
        elif edge.source not in layers or edge.target not in layers:
            problems.append(f"a part without a layer (add it to LAYERS): {edge}")
        elif layers[edge.target] > layers[edge.source]:
            problems.append(f"upward import: {edge}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(found)]
    return problems


def cycles(found: list[Import]) -> list[list[str]]:
    """One closed path per cycle between parts (each found from its smallest part)."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        graph.setdefault(edge.source, set()).add(edge.target)
    loops = []
    for start in sorted(graph):
        path = _path_back(graph, start, start, [start], {start})
        if path is not None and min(path) == start:
            loops.append(path)
    return loops


def _path_back(
    graph: Mapping[str, set[str]], node: str, goal: str, path: list[str], seen: set[str]
) -> list[str] | None:
    for nxt in sorted(graph.get(node, ())):
        if nxt == goal:
            return [*path, goal]
        if nxt not in seen:
            seen.add(nxt)
            found = _path_back(graph, nxt, goal, [*path, nxt], seen)
            if found is not None:
                return found
    return None


# -- the agent itself -------------------------------------------------------------------------


def test_every_part_of_the_agent_has_a_layer() -> None:
    parts = {p.stem for p in AGENT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {SANDBOX} == set(LAYERS)


def test_the_agent_imports_only_downwards_and_without_cycles() -> None:
    found = imports(AGENT, "agent")
    assert any(e.source == "engine" and e.target == "sources" for e in found)  # it does look
    assert violations(found, LAYERS) == []


# -- the checker catches what it should ----------------------------------------------------------


def fake_package(root: Path, files: Mapping[str, str]) -> Path:
    """A package `pkg` under `root` with the given files (relative path -> source)."""
    base = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


FAKE_LAYERS = {"engine": 4, "sources": 3, "transfer": 2, "models": 0, "__init__": 0}
CLEAN = {
    "engine/__init__.py": "",
    "engine/sync.py": "from pkg.sources import base\nfrom pkg.models import Doc\n",
    "sources/__init__.py": "",
    "sources/base.py": "from pkg.transfer.contract import Target\n",
    "transfer/__init__.py": "",
    "transfer/contract.py": "from pkg.models import Doc\n",
    "models.py": "class Doc: ...\n",
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"transfer/download.py": "from pkg.sources.base import Source\n"},
            "upward import: download.py:1 (transfer -> sources)",
        ),
        (
            {"transfer/download.py": "def f():\n    from pkg.engine import sync\n"},
            "upward import: download.py:2 (transfer -> engine)",
        ),
        (
            {"transfer/download.py": "import pkg.sources.base\n"},
            "upward import: download.py:1 (transfer -> sources)",
        ),
        (
            {"transfer/download.py": "from .. import sources\n"},
            "upward import: download.py:1 (transfer -> sources)",
        ),
        (
            {
                "models.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from pkg.transfer import contract\n"
            },
            "upward import: models.py:3 (models -> transfer)",
        ),
        ({"extra.py": "from pkg import models\n"}, "a part without a layer"),
        ({"sandbox/__init__.py": "", "sandbox/fake.py": "from pkg import models\n"}, "sandbox"),
    ],
)
def test_the_checker_reports_a_deliberately_added_bad_import(
    tmp_path: Path, change: Mapping[str, str], expected: str
) -> None:
    root = fake_package(tmp_path, {**CLEAN, **change})
    assert violations(imports(root, "pkg"), FAKE_LAYERS) != []
    assert any(expected in problem for problem in violations(imports(root, "pkg"), FAKE_LAYERS))


def test_the_checker_accepts_the_clean_tree(tmp_path: Path) -> None:
    root = fake_package(tmp_path, CLEAN)
    assert violations(imports(root, "pkg"), FAKE_LAYERS) == []


def test_the_checker_reports_a_cycle_within_one_layer(tmp_path: Path) -> None:
    same = {**FAKE_LAYERS, "errors": 0}
    root = fake_package(
        tmp_path,
        {**CLEAN, "errors.py": "from pkg.models import Doc\n", "models.py": "import pkg.errors\n"},
    )
    assert violations(imports(root, "pkg"), same) == ["import cycle: errors -> models -> errors"]

"""The package's layout stays the data's way: each step imports only the steps before it.

source -> decode -> watching -> telemetry -> export -> instrument / cli. ``settings``,
``version`` and ``package`` are leaves every step may use. Nothing below
``telemetry`` imports OpenTelemetry, and ``import otel_blob`` loads none of it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from otel_blob import environment_variables, settings
from otel_blob.decode import LogDecoder, parse_line
from otel_blob.decode.rules import PLAIN_RULES

PKG = Path(__file__).resolve().parent.parent / "otel_blob"
STEPS = ["source", "decode", "watching", "telemetry", "export", "instrument", "cli"]
LEAVES = {"settings", "version", "package", "environment_variables"}
# The top-level modules that only re-export or start a step (entry points).
ENTRIES = {"__init__", "__main__", "helper", "demo"}
NO_OTEL = {"source", "decode", "watching"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def _imports(path: Path, modname: str) -> list[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["otel_blob", *modname.split(".")]
    if path.name != "__init__.py":
        package = package[:-1]
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    names = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: not a run-time dependency
            continue
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x
                    names.extend(f"{mod}.{a.name}" for a in node.names)
                    continue
            else:
                mod = node.module or ""
            names.append(mod)
    return names


def _step(name: str) -> str | None:
    """The step (or leaf) an absolute otel_blob module name belongs to."""
    parts = name.split(".")
    if parts[0] != "otel_blob" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize("modname, path", _modules(), ids=[m for m, _ in _modules()])
def test_each_step_imports_only_the_steps_before_it(modname, path):
    top = modname.split(".")[0]
    if top in ENTRIES and "." not in modname:
        return
    for name in _imports(path, modname):
        if name.startswith("opentelemetry") and top in NO_OTEL:
            pytest.fail(f"{modname} imports {name}: no OpenTelemetry below telemetry/")
        step = _step(name)
        if step is None or step == top or step in LEAVES:
            continue
        if top in LEAVES:
            pytest.fail(f"{modname} (a leaf) imports {name}")
        assert step in STEPS, f"{modname} imports {name}, which is in no step"
        if top in STEPS:
            assert STEPS.index(step) < STEPS.index(top), f"{modname} ({top}) imports {name} ({step}), a later step"


def test_leaves_import_no_step():
    for modname, path in _modules():
        if modname.split(".")[0] in LEAVES:
            steps = {_step(n) for n in _imports(path, modname)} - {None} - LEAVES
            assert not steps, f"{modname} imports {steps}"


def test_the_engine_loads_no_opentelemetry():
    code = ("import sys, otel_blob, otel_blob.source, otel_blob.decode, otel_blob.watching, otel_blob.settings; "
            "import otel_blob.watching.replay, otel_blob.watching.positions, otel_blob.watching.checkpoint; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_import_cycle_between_modules():
    graph = {}
    for modname, path in _modules():
        full = "otel_blob." + modname.removesuffix(".__init__") if modname != "__init__" else "otel_blob"
        graph[full] = {n for n in _imports(path, modname) if n.startswith("otel_blob")}
    known = set(graph)

    def resolve(name: str) -> str | None:  # "otel_blob.decode.info" or a name inside a module
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {r for n in deps if (r := resolve(n)) and r != m} for m, deps in graph.items()}
    # Packages re-export their modules: an edge from a package __init__ to its own modules is not a cycle.
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in edges.get(m, ()):
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d] if d in stack else [m, d]
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif state.get(d) is None:
                visit(d, stack + [d])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("rule", PLAIN_RULES, ids=[r.name for r in PLAIN_RULES])
def test_every_plain_text_shape_is_found_by_the_batch_path(rule):
    samples = {
        "job": [b"2026/01/01-00:00:00.000001 1 [db/flush_job.cc:1] [cf1] [JOB 7] Flushing memtable with next log file: 9",
                b"2026/01/01-00:00:00.000001 1 [db/compaction_job.cc:1] [default] [JOB 8] Compacting 1@0 files to L1"],
        "session": [b"2026/01/01-00:00:00.000001 1 DB Session ID:  ABCDEFGHIJ0123456789"],
        "db_path": [b"2026/01/01-00:00:00.000001 1 SST files in /data/db dir, Total Num: 0, files: "],
        "shutdown": [b"2026/01/01-00:00:00.000001 1 [db/db_impl/db_impl.cc:709] Shutdown complete"],
        "new_db": [b"2026/01/01-00:00:00.000001 1 [db/db_impl/db_impl_open.cc:312] Creating manifest 1 "],
    }
    assert rule.name in samples, f"add a sample line for the plain-text rule {rule.name!r}"
    for line in samples[rule.name]:
        parsed = parse_line(line)
        assert parsed is not None and parsed.kind == rule.name
        # The batch path finds it between event lines and decodes it the same way.
        blob = b'2026/01/01-00:00:00.000002 1 EVENT_LOG_v1 {"time_micros": 5, "job": 7, "event": "blob_file_deletion", "file_number": 3}'
        one, batch = LogDecoder("/db"), LogDecoder("/db")
        lines = [blob, line, blob.replace(b"3}", b"4}")]
        expected = [i for ln in lines if (p := parse_line(ln)) for i in one.feed(p)]
        assert batch.feed_lines(lines) == expected
        assert batch.state() == one.state()


def test_environment_variables_names_the_instrumentation_settings():
    names = {v for k, v in vars(environment_variables).items() if k.startswith("OTEL_")}
    assert names == {s.env for s in settings.INSTRUMENTATION}


def test_settings_dataclass_matches_the_declarations():
    from dataclasses import fields

    assert [f.name for f in fields(settings.Settings)] == [s.name for s in settings.INSTRUMENTATION]
    assert all(getattr(settings.Settings(), s.name) == s.default for s in settings.INSTRUMENTATION)


def _table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows (by first cell, backticks removed) of the first table after ``heading``."""
    part = text.split(heading, 1)[1]
    rows = {}
    for line in part.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
        elif rows and not line.startswith("|"):
            break
    return rows


@pytest.mark.parametrize("family, heading", [
    ("INSTRUMENTATION", "## The instrumentation"),
    ("CLI", "## The sidecar CLI"),
])
def test_settings_doc_matches_the_settings_module(family, heading):
    text = (PKG.parent / "docs" / "settings.md").read_text(encoding="utf-8")
    rows = _table_rows(text, heading)
    declared = getattr(settings, family)
    ours = {name for name in rows if name.startswith(("OTEL_PYTHON_ROCKSDICT_", "OTEL_BLOB_"))}
    assert ours == {s.env for s in declared}, "docs/settings.md and otel_blob/settings.py disagree"
    for s in declared:
        row = rows[s.env]
        default = "" if s.default is None else str(s.default).lower()
        assert row[2].lower() == default, f"{s.env}: the doc says default {row[2]!r}, the code {s.default!r}"


def test_readme_settings_table_matches_the_settings_module():
    text = (PKG.parent / "README.md").read_text(encoding="utf-8")
    rows = _table_rows(text, "## Settings")
    ours = {name for name in rows if name.startswith("OTEL_PYTHON_ROCKSDICT_")}
    assert ours == {s.env for s in settings.INSTRUMENTATION}, "README.md's settings table and otel_blob/settings.py disagree"
    for s in settings.INSTRUMENTATION:
        default = "" if s.default is None else str(s.default).lower()
        assert rows[s.env][1].lower() == default, f"{s.env}: README says default {rows[s.env][1]!r}, the code {s.default!r}"

"""Re-lay the package out by layer (issue 27): move modules, split commands, rewrite imports.

Run at the repository root, on a clean work tree::

    python tools/relayout.py          # moves with git mv, rewrites, then ruff --fix + format
    python tools/relayout.py --dry    # only print what it would do

It is idempotent: a move whose old path is gone is skipped, a rewrite that finds nothing
changes nothing, so running it twice (or after a merge brought new files) is safe. Standard
library only; ``ruff`` (from PATH or next to this Python) tidies the touched files.

What it does, in order:

1. ``MOVES``: ``git mv`` each old path to its new one (a table, one line each).
   New files that appear next to a moved module follow it by a rule: a top-level
   ``landmark_tl/<stem>_<anything>.py`` goes where ``landmark_tl/<stem>.py`` went, and a
   test ``tests/test_<module>.py`` goes to ``tests/<folder>/`` when ``landmark_tl/<folder>/
   <module>.py`` is the one module of that name. Anything else left at the top of
   ``landmark_tl/`` or ``tests/`` is printed as UNPLACED: add a line to ``MOVES``.
2. ``SPLITS``: top-level definitions carried out of a module into another one (the command
   line ``main`` of each command into ``landmark_tl/commands/<command>.py``), with the
   source's imports; ruff then drops the unused ones.
3. Rewrites every dotted name ``landmark_tl.<old.module>`` (and ``tests.<old>``) to the new
   one in the package, tests, benchmarks, hydra_plugins, notebooks, docs, README, the conf
   YAML and pyproject.toml: imports, ``mock.patch``/``monkeypatch`` strings, ``_target_``,
   entry points; ``from landmark_tl import <module>`` becomes ``from landmark_tl.<pkg>
   import <module>``; file paths ``landmark_tl/<old>.py`` and ``tests/test_x.py`` in text.
   The commands stay public as ``python -m landmark_tl.<command>``: a thin shim
   ``landmark_tl/<command>.py`` (``SHIMS``) runs ``landmark_tl.commands.<command>.main``,
   and the bare name ``landmark_tl.<command>`` (``-m`` arguments, ``landmark_tl.train(...)``)
   is left as it is; only imports of it and its attributes are rewritten.
4. ``FIXES``: the few literal edits a move needs (a path computed from ``__file__``, the
   ``landmark-tl`` dispatcher's module name).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

# 1. old path -> new path -------------------------------------------------------------------
MOVES: list[tuple[str, str]] = [
    # core: foundations every layer may use
    ("landmark_tl/errors.py", "landmark_tl/core/errors.py"),
    ("landmark_tl/io.py", "landmark_tl/core/io.py"),
    ("landmark_tl/hierarchy.py", "landmark_tl/core/hierarchy.py"),
    ("landmark_tl/quiet.py", "landmark_tl/core/quiet.py"),
    # evaluation: scores and statistics
    ("landmark_tl/metrics.py", "landmark_tl/evaluation/metrics.py"),
    ("landmark_tl/stats.py", "landmark_tl/evaluation/stats.py"),
    # data: the data set doctor joins the readers it checks
    ("landmark_tl/doctor.py", "landmark_tl/data/doctor.py"),
    # config: the schema and the Lightning surface it checks
    ("landmark_tl/config.py", "landmark_tl/config/schema.py"),
    ("landmark_tl/trainer_options.py", "landmark_tl/config/lightning.py"),
    # runs: the run-dir format
    ("landmark_tl/rundir.py", "landmark_tl/runs/rundir.py"),
    ("landmark_tl/fingerprint.py", "landmark_tl/runs/fingerprint.py"),
    ("landmark_tl/provenance.py", "landmark_tl/runs/provenance.py"),
    ("landmark_tl/runlock.py", "landmark_tl/runs/runlock.py"),
    # training: the engine
    ("landmark_tl/build.py", "landmark_tl/training/build.py"),
    ("landmark_tl/fit.py", "landmark_tl/training/fit.py"),
    ("landmark_tl/checkpointing.py", "landmark_tl/training/checkpointing.py"),
    ("landmark_tl/loggers.py", "landmark_tl/training/loggers.py"),
    ("landmark_tl/train.py", "landmark_tl/training/run.py"),
    ("landmark_tl/divergence.py", "landmark_tl/training/divergence.py"),
    ("landmark_tl/jobs.py", "landmark_tl/training/jobs.py"),
    # reporting and serving: what uses finished runs
    ("landmark_tl/report.py", "landmark_tl/reporting/report.py"),
    ("landmark_tl/plots.py", "landmark_tl/reporting/plots.py"),
    ("landmark_tl/studies.py", "landmark_tl/reporting/studies.py"),
    ("landmark_tl/inference.py", "landmark_tl/serving/inference.py"),
    ("landmark_tl/predict.py", "landmark_tl/serving/predict.py"),
    ("landmark_tl/evaluate.py", "landmark_tl/serving/evaluate.py"),
    ("landmark_tl/export.py", "landmark_tl/serving/export.py"),
    # commands: the command line
    ("landmark_tl/cli.py", "landmark_tl/commands/cli.py"),
    ("landmark_tl/shards.py", "landmark_tl/commands/shards.py"),
    ("landmark_tl/callbacks.py", "landmark_tl/commands/hydra_callbacks.py"),
    # tests mirror the package (test_<module>.py not listed here follow their module)
    ("tests/test_hierarchy.py", "tests/core/test_hierarchy.py"),
    ("tests/test_metrics.py", "tests/evaluation/test_metrics.py"),
    ("tests/test_catalog.py", "tests/data/test_catalog.py"),
    ("tests/test_datamodule.py", "tests/data/test_datamodule.py"),
    ("tests/test_doctor.py", "tests/data/test_doctor.py"),
    ("tests/test_features.py", "tests/data/test_features.py"),
    ("tests/test_index.py", "tests/data/test_index.py"),
    ("tests/test_longtail.py", "tests/data/test_longtail.py"),
    ("tests/test_sampling.py", "tests/data/test_sampling.py"),
    ("tests/test_shards.py", "tests/data/test_shards.py"),
    ("tests/test_sources.py", "tests/data/test_sources.py"),
    ("tests/test_splits.py", "tests/data/test_splits.py"),
    ("tests/test_synthetic.py", "tests/data/test_synthetic.py"),
    ("tests/test_timm_augment.py", "tests/data/test_timm_augment.py"),
    ("tests/test_transforms.py", "tests/data/test_transforms.py"),
    ("tests/test_backbone.py", "tests/models/test_backbone.py"),
    ("tests/test_ema.py", "tests/models/test_ema.py"),
    ("tests/test_finetuning.py", "tests/models/test_finetuning.py"),
    ("tests/test_linear_probe.py", "tests/models/test_linear_probe.py"),
    ("tests/test_optim.py", "tests/models/test_optim.py"),
    ("tests/test_registry.py", "tests/models/test_registry.py"),
    ("tests/test_strategies.py", "tests/models/test_strategies.py"),
    ("tests/test_lightning_surface.py", "tests/config/test_lightning_surface.py"),
    ("tests/test_run_format.py", "tests/runs/test_run_format.py"),
    ("tests/test_run_integrity.py", "tests/runs/test_run_integrity.py"),
    ("tests/test_train.py", "tests/training/test_train.py"),
    ("tests/test_resume.py", "tests/training/test_resume.py"),
    ("tests/test_ddp.py", "tests/training/test_ddp.py"),
    ("tests/test_faults.py", "tests/training/test_faults.py"),
    ("tests/test_heads_launcher.py", "tests/sweep/test_heads_launcher.py"),
    ("tests/test_sweep_compose.py", "tests/sweep/test_sweep_compose.py"),
    ("tests/test_scaling.py", "tests/sweep/test_scaling.py"),
    ("tests/test_report.py", "tests/reporting/test_report.py"),
    ("tests/test_plots.py", "tests/reporting/test_plots.py"),
    ("tests/test_many_classes.py", "tests/reporting/test_many_classes.py"),
    ("tests/test_inference.py", "tests/serving/test_inference.py"),
    ("tests/test_cli.py", "tests/commands/test_cli.py"),
    ("tests/test_cli_errors.py", "tests/commands/test_cli_errors.py"),
    # tests other branches add (no module of that name to follow)
    ("tests/test_data_faults.py", "tests/data/test_data_faults.py"),
    ("tests/test_layer_decay.py", "tests/models/test_layer_decay.py"),
    ("tests/test_console.py", "tests/commands/test_console.py"),
    ("tests/test_finetuning_config.py", "tests/config/test_finetuning_config.py"),
    ("tests/test_run_faults.py", "tests/training/test_run_faults.py"),
]
# Files that stay at the top: the package's face, and tests of the package as a whole.
KEEP = {
    "landmark_tl/__init__.py",
    "landmark_tl/__main__.py",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/datasets.py",
    "tests/test_packaging.py",
    "tests/test_notebook.py",
}
PACKAGE_DOCS = {
    "core": "Foundations every layer may use: errors, atomic file writes, the label hierarchy.",
    "evaluation": "Scores of predictions and the statistics that compare runs.",
    "config": "The schema that Hydra's YAML fills in, and the Lightning surface it checks.",
    "runs": "The run-dir format: files, fingerprint, provenance.",
    "training": "The training engine: build the pieces of a run, fit, checkpoints, loggers.",
    "reporting": "Reports on finished runs: tables, statistics and figures.",
    "serving": "Finished runs at work: load, predict, evaluate, export.",
    "commands": "The command line: ``landmark-tl`` and one thin Hydra main per command.",
}

# 2. definitions carried out of a module: (module file, [names], new file) ------------------
SPLITS: list[tuple[str, list[str], str]] = [
    ("landmark_tl/training/run.py", ["main"], "landmark_tl/commands/train.py"),
    ("landmark_tl/reporting/report.py", ["main"], "landmark_tl/commands/report.py"),
    ("landmark_tl/serving/predict.py", ["main"], "landmark_tl/commands/predict.py"),
    ("landmark_tl/serving/evaluate.py", ["main"], "landmark_tl/commands/evaluate.py"),
    ("landmark_tl/serving/export.py", ["main"], "landmark_tl/commands/export.py"),
    ("landmark_tl/data/doctor.py", ["check_data", "main"], "landmark_tl/commands/doctor.py"),
    # catalog <-> sources: what a catalog is made of, which the sources use, on its own
    (
        "landmark_tl/data/catalog.py",
        [
            "IMAGE_EXTENSIONS",
            "LAYOUT",
            "WRONG_DEPTH",
            "_MAX_LISTED",
            "CatalogError",
            "ImageRecord",
            "Problem",
            "DroppedLandmark",
            "NamedBytes",
            "show",
            "raise_all",
        ],
        "landmark_tl/data/records.py",
    ),
    # the shard writer needs a Catalog: out of the sources (which the catalog imports)
    (
        "landmark_tl/data/sources/shards.py",
        ["write_shards", "_write_tar", "_add"],
        "landmark_tl/data/shard_writer.py",
    ),
    # data <-> models: timm's data config lives with the transforms that use it
    ("landmark_tl/models/backbone.py", ["Preprocessing"], "landmark_tl/data/transforms.py"),
]
# The docstring of a module a split creates (default: the command line of the source).
SPLIT_DOCS = {
    "landmark_tl/data/records.py": "What a catalog is made of: image records, skipped files, "
    "dropped landmarks,\nthe errors, and the names every data source shares (image "
    "extensions, the layout).",
    "landmark_tl/data/shard_writer.py": "Write a catalog as WebDataset tar shards "
    "(``landmark-tl shards``); the shards\nsource (:mod:`landmark_tl.data.sources.shards`) "
    "reads them back.",
}

# 3. ``python -m landmark_tl.<command>`` keeps working: a shim per public command -----------
SHIMS = ["train", "report", "predict", "evaluate", "export", "doctor", "shards"]
# Names of the package's own API: ``from landmark_tl import train`` is the function.
PUBLIC = {"compose", "load_run", "train", "__version__"}

# 4. literal edits a move needs: (file, old text, new text) ------------------------------
FIXES: list[tuple[str, str, str]] = [
    # the checkout is two folders up now
    (
        "landmark_tl/runs/fingerprint.py",
        "package = Path(__file__).resolve().parent\n",
        "package = Path(__file__).resolve().parents[1]\n",
    ),
    # the dispatcher imports each command's module by name
    (
        "landmark_tl/commands/cli.py",
        'importlib.import_module(f"landmark_tl.{name}")',
        'importlib.import_module(f"landmark_tl.commands.{name}")',
    ),
    (
        "tests/commands/test_cli.py",
        "import landmark_tl.train, landmark_tl.fit, landmark_tl.models.strategies.linear_probe\n",
        "import landmark_tl.train, landmark_tl.fit\n"
        "import landmark_tl.models.strategies.linear_probe\n",
    ),
    (
        "landmark_tl/data/sources/shards.py",
        '"""``data=shards``: WebDataset tar shards, and writing them from any other source.',
        '"""``data=shards``: WebDataset tar shards (written by ``data/shard_writer.py``).',
    ),
    (
        "landmark_tl/__init__.py",
        "        import landmark_tl.train\n\n        return landmark_tl.train\n",
        "        from landmark_tl.training.run import train\n\n        return train\n",
    ),
]

# Where the dotted names and paths are rewritten.
TEXT_GLOBS = [
    "landmark_tl/**/*.py",
    "landmark_tl/conf/**/*.yaml",
    "tests/**/*.py",
    "benchmarks/**/*.py",
    "hydra_plugins/**/*.py",
    "notebooks/*.ipynb",
    "docs/**/*.md",
    "README.md",
    "pyproject.toml",
    "Makefile",
    ".ci/run",
]
SELF = Path(__file__).resolve()
SHIM = '''"""``python -m landmark_tl.{name}``: the ``landmark-tl {name}`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.{name}`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.{name} import main

    sys.exit(main())
'''


def dotted(path: str) -> str:
    """``landmark_tl/core/io.py`` -> ``landmark_tl.core.io`` (a package: its folder)."""
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def git(*args: str, dry: bool) -> None:
    print("git", *args)
    if not dry:
        subprocess.run(["git", *args], check=True)


def ensure_package(folder: Path, dry: bool, touched: set[Path]) -> None:
    """Give a new folder (and its parents up to the root package) an ``__init__.py``."""
    while folder.name and folder != Path("."):
        init = folder / "__init__.py"
        if not init.exists():
            doc = PACKAGE_DOCS.get(folder.name, "")
            text = f'"""{doc}"""\n' if doc and folder.parent.name == "landmark_tl" else ""
            print(f"create {init}")
            if not dry:
                folder.mkdir(parents=True, exist_ok=True)
                init.write_text(text)
                subprocess.run(["git", "add", str(init)], check=True)
            touched.add(init)
        if folder.name in ("landmark_tl", "tests"):
            break
        folder = folder.parent


def moves_with_rules() -> list[tuple[str, str]]:
    """``MOVES`` plus the files that follow a moved module by the documented rule."""
    table = list(MOVES)
    done = {old for old, _ in MOVES} | {new for _, new in MOVES}
    by_stem = {Path(old).stem: Path(new).parent for old, new in MOVES if old.count("/") == 1}
    for path in sorted(Path("landmark_tl").glob("*.py")):
        name = str(path)
        if name in done or name in KEEP or path.stem in SHIMS:
            continue
        stem = next((s for s in by_stem if path.stem.startswith(s + "_")), None)
        if stem:
            table.append((name, str(by_stem[stem] / path.name)))
    modules: dict[str, list[Path]] = {}
    for path in Path("landmark_tl").rglob("*.py"):
        modules.setdefault(path.stem, []).append(path)
    for _, new in table:  # the modules' new homes count, before they are moved
        if new.startswith("landmark_tl/"):
            modules.setdefault(Path(new).stem, []).append(Path(new))
    for path in sorted(Path("tests").glob("test_*.py")):
        name = str(path)
        if name in done or name in KEEP:
            continue
        homes = {p.parent for p in modules.get(path.stem.removeprefix("test_"), [])}
        homes = {h for h in homes if h != Path("landmark_tl")}
        if len(homes) == 1:
            folder = Path("tests", *next(iter(homes)).parts[1:2])
            table.append((name, str(folder / path.name)))
    return table


def unplaced(table: list[tuple[str, str]]) -> list[str]:
    """Top-level files no line of the table nor a rule places."""
    old = {o for o, _ in table}
    left = []
    for folder, pattern in (("landmark_tl", "*.py"), ("tests", "*.py")):
        for path in sorted(Path(folder).glob(pattern)):
            name = str(path)
            is_shim = folder == "landmark_tl" and path.stem in SHIMS
            if name not in old and name not in KEEP and not is_shim:
                left.append(name)
    return left


def move(table: list[tuple[str, str]], dry: bool, touched: set[Path]) -> None:
    for old, new in table:
        if not Path(old).exists() or Path(old).read_text() == SHIM.format(name=Path(old).stem):
            continue  # moved already (a command's old path now holds its shim)
        if Path(new).exists():
            sys.exit(f"both {old} and {new} exist: merge them by hand, then run again")
        ensure_package(Path(new).parent, dry, touched)
        if not dry:
            Path(new).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new, dry=dry)
        touched.add(Path(new))


def line_span(node: ast.stmt, lines: list[str]) -> tuple[int, int]:
    """0-based [start, end) of a top-level statement with its decorators and the comment
    lines right above it."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return start, node.end_lineno or node.lineno


def is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def after_imports(lines: list[str], tree: ast.Module) -> int:
    """0-based line index just after the module's last top-level import (or docstring)."""
    ends = [
        n.end_lineno or n.lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    if not ends and tree.body and isinstance(tree.body[0], ast.Expr):
        ends = [tree.body[0].end_lineno or 1]
    return max(ends, default=0)


def split(source: str, names: list[str], target: str, dry: bool, touched: set[Path]) -> None:
    """Carry the top-level definitions ``names`` (and the ``__main__`` guard, with ``main``)
    from ``source`` into ``target`` (new, or after the imports of one that stands), which
    imports what ``source`` imported and the rest of ``source`` (ruff removes what it does
    not use); ``source`` imports the carried names it still uses."""
    src = Path(source)
    if not src.exists():
        return
    text = src.read_text()
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    moving, imports, defined = [], [], []
    for node in tree.body:
        node_names = [getattr(node, "name", None)]
        if isinstance(node, ast.Assign):
            node_names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if any(n in names for n in node_names) or ("main" in names and is_main_guard(node)):
            moving.append(node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imports.append(node)
        else:
            defined += [n for n in node_names if n]
    if not any(getattr(n, "name", None) in names for n in moving) and not any(
        isinstance(n, ast.Assign) for n in moving
    ):
        return  # done already
    module = dotted(source)
    spans = [line_span(n, lines) for n in moving]
    carried = "\n\n".join("".join(lines[a:b]).strip("\n") for a, b in spans) + "\n"
    kept = [line for i, line in enumerate(lines) if not any(a <= i < b for a, b in spans)]
    header = "".join(
        ast.get_source_segment(text, n) + "\n"
        for n in imports
        if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    )
    own = ", ".join(sorted(set(defined) - {"__all__"}))
    header += f"from {module} import {own}\n" if own else ""
    dst = Path(target)
    print(f"split {', '.join(names)}: {source} -> {target}")
    touched.update({src, dst})
    if dry:
        return
    ensure_package(dst.parent, dry, touched)
    if dst.exists():
        body = dst.read_text()
        body_lines = body.splitlines(keepends=True)
        at = after_imports(body_lines, ast.parse(body))
        new = (
            "".join(body_lines[:at]) + header + "\n\n" + carried + "\n\n" + "".join(body_lines[at:])
        )
    else:
        doc = (
            SPLIT_DOCS.get(target)
            or f"``landmark-tl {dst.stem}``: the command line of :mod:`{module}`."
        )
        new = f'"""{doc}"""\n\nfrom __future__ import annotations\n\n' + header + "\n\n" + carried
    dst.write_text(new)
    remaining = "".join(kept)
    used = [n for n in names if re.search(rf"\b{n}\b", remaining)]
    if used:
        kept_tree = ast.parse(remaining)
        at = after_imports(remaining.splitlines(keepends=True), kept_tree)
        kept_lines = remaining.splitlines(keepends=True)
        kept_lines.insert(at, f"from {dotted(target)} import {', '.join(used)}\n")
        remaining = "".join(kept_lines)
    src.write_text(re.sub(r"\n{3,}$", "\n", remaining.rstrip("\n") + "\n"))
    subprocess.run(["git", "add", str(dst)], check=True)


def name_tables(table: list[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """Old dotted module -> new one; every dotted name that exists in the new layout."""
    renames = {dotted(o): dotted(n) for o, n in table if o.endswith(".py")}
    new_names = set(renames.values())
    for path in list(Path("landmark_tl").rglob("*.py")) + list(Path("tests").rglob("*.py")):
        if str(path) not in {o for o, _ in table}:
            new_names.add(dotted(str(path)))
            new_names.add(dotted(str(path.parent)))
    for _, new in table:
        new_names.add(dotted(str(Path(new).parent)))
    return renames, new_names - set(renames) | (set(renames.values()) & set(renames))


TOKEN = re.compile(r"(?<![\w.])((?:landmark_tl|tests)(?:\.\w+)+)")
FROM_PKG = re.compile(r"^(\s*)from landmark_tl import (\w+)(?: as (\w+))?\s*$", re.M)


def longest(prefixes: set[str] | dict[str, str], name: str) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in prefixes:
            return ".".join(parts[:n])
    return None


def rewrite(text: str, renames: dict[str, str], new_names: set[str]) -> str:
    commands = {f"landmark_tl.{c}" for c in SHIMS}

    def token(match: re.Match[str]) -> str:
        name = match.group(1)
        old = longest(renames, name)
        if old is None:
            return name
        new = longest(new_names, name)
        if new is not None and len(new) > len(old):
            return name  # already a name of the new layout
        after = re.match(r" import (\w+)", text[match.end() : match.end() + 60])
        if after and f"{name}.{after.group(1)}" in new_names:
            return name  # from <new package> import <its module>
        before = text[max(0, match.start() - 7) : match.start()]
        if name == old and old in commands and not before.endswith(("import ", "from ")):
            return name  # the public command (python -m, landmark_tl.train(...)) stays
        return renames[old] + name[len(old) :]

    def from_package(match: re.Match[str]) -> str:
        indent, name, alias = match.groups()
        old = f"landmark_tl.{name}"
        if name in PUBLIC or old not in renames:
            return match.group(0)
        package, _, module = renames[old].rpartition(".")
        alias = alias or name
        tail = "" if alias == module else f" as {alias}"
        return f"{indent}from {package} import {module}{tail}"

    text = FROM_PKG.sub(from_package, text)
    return TOKEN.sub(token, text)


IMPORT = re.compile(r"^([ \t]*)from ([\w.]+) import (\([^)]*\)|[^\n]*)$", re.M)


def split_names() -> dict[tuple[str, str], str]:
    """(module, name) -> the module a split carried the name into."""
    return {(dotted(s), n): dotted(t) for s, names, t in SPLITS for n in names}


def rewrite_split_names(text: str, own: str = "") -> str:
    """``from m import a, main`` where a split carried ``main`` out of ``m``: import it from
    its new module; ``m.main`` in strings (``mock.patch``) likewise."""
    moved = split_names()
    sources = {m for m, _ in moved}

    def statement(match: re.Match[str]) -> str:
        indent, module, names = match.groups()
        if module not in sources:
            return match.group(0)
        body = names.strip().removeprefix("(").removesuffix(")")
        items = [n.split("#")[0].strip() for n in body.replace("\n", ",").split(",")]
        items = [n for n in items if n]
        targets: dict[str, list[str]] = {}
        for item in items:
            target = moved.get((module, item.split(" as ")[0].strip()), module)
            targets.setdefault(target, []).append(item)
        if list(targets) == [module]:
            return match.group(0)
        targets.pop(own, None)  # names now defined in this very module
        lines = [f"{indent}from {t} import {', '.join(n)}" for t, n in targets.items()]
        return "\n".join(lines)

    text = IMPORT.sub(statement, text)
    for (module, name), target in moved.items():
        text = re.sub(rf"(?<![\w.]){re.escape(module)}\.{name}\b", f"{target}.{name}", text)
    return text


def rewrite_paths(text: str, table: list[tuple[str, str]]) -> str:
    paths = {o: n for o, n in table}
    pattern = re.compile(
        r"(?<![\w/.])(" + "|".join(re.escape(o) for o in sorted(paths, key=len)[::-1]) + r")\b"
    )
    return pattern.sub(lambda m: paths[m.group(1)], text) if paths else text


def write_shims(dry: bool, touched: set[Path]) -> None:
    for name in SHIMS:
        path = Path("landmark_tl", f"{name}.py")
        if path.exists() or not Path("landmark_tl/commands", f"{name}.py").exists():
            continue
        print(f"create {path} (python -m landmark_tl.{name})")
        if not dry:
            path.write_text(SHIM.format(name=name))
            subprocess.run(["git", "add", str(path)], check=True)
        touched.add(path)


def ruff() -> str:
    found = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="print the moves, change nothing")
    dry = parser.parse_args().dry
    if not Path("landmark_tl/__init__.py").is_file():
        sys.exit("run at the repository root")
    touched: set[Path] = set()
    table = moves_with_rules()
    move(table, dry, touched)
    for source, names, target in SPLITS:
        split(source, names, target, dry, touched)
    write_shims(dry, touched)
    renames, new_names = name_tables(table)
    for pattern in TEXT_GLOBS:
        for path in sorted(Path(".").glob(pattern)):
            if path.resolve() == SELF or not path.is_file():
                continue
            text = path.read_text()
            new = text
            for file, old, fixed in FIXES:
                if str(path) == file:
                    new = new.replace(old, fixed)
            new = rewrite(rewrite_paths(new, table), renames, new_names)
            if path.suffix in (".py", ".ipynb", ".md"):
                new = rewrite_split_names(new, dotted(str(path)))
            if new != text:
                print(f"rewrite {path}")
                touched.add(path)
                if not dry:
                    path.write_text(new)
    for name in unplaced(table):
        print(f"UNPLACED {name}: add a line to MOVES in tools/relayout.py")
    python = sorted(str(p) for p in touched if p.suffix == ".py" and (dry or p.exists()))
    if python and not dry:
        # a split leaves imports such as ``from x import (\n    a,\n)``: join them
        parts = sorted({s for s, _, _ in SPLITS} | {t for _, _, t in SPLITS})
        parts = [p for p in parts if Path(p).exists()]
        joined = "lint.isort.split-on-trailing-comma = false"
        subprocess.run([ruff(), "check", "--fix", "--quiet", "--config", joined, *parts])
        subprocess.run([ruff(), "check", "--fix", "--quiet", *python], check=False)
        subprocess.run([ruff(), "format", "--quiet", *python], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

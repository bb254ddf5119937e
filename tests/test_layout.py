"""The repository's layering, as README's layout table states it: corpus code at the bottom,
shared numerics and storage (common/) above it, the model (textebm/) and the judges (lm_eval/)
beside each other and never importing one another, the pipeline (pipeline/) above them and the
command line (cli.py, at the top) above everything; and committed results that name no path of
the machine that made them."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("corpora", "common", "textebm", "lm_eval", "pipeline")
ALLOWED = {"corpora": set(), "common": {"corpora"}, "textebm": {"common", "corpora"},
           "lm_eval": {"common", "corpora"}, "pipeline": {"common", "corpora", "textebm", "lm_eval"}}


def imported(f: Path) -> set[str]:
    """The project packages (and the top-level cli) that the file imports, lazy imports included."""
    found = set()
    for n in ast.walk(ast.parse(f.read_text())):
        names = [n.module] if isinstance(n, ast.ImportFrom) and n.module else \
            [a.name for a in n.names] if isinstance(n, ast.Import) else []
        found |= {m.split(".")[0] for m in names
                  if m.split(".")[0] in PACKAGES + ("bench", "studies", "cli")}
    return found


def imports(pkg: str) -> dict[str, set[str]]:
    """{module file: project packages it imports (at any depth, lazy imports included)}"""
    return {str(f.relative_to(ROOT / pkg)): imported(f) - {pkg} for f in (ROOT / pkg).rglob("*.py")}


def test_packages_import_only_the_layers_below_them():
    for pkg in PACKAGES:
        for f, used in imports(pkg).items():
            assert used <= ALLOWED[pkg], f"{pkg}/{f} imports {sorted(used - ALLOWED[pkg])}"


def test_the_command_line_lives_at_the_top():
    # cli.py (the `textebm` entry point, pyproject's [project.scripts]) may use every layer and
    # is used by none; the studies and benches run it, they are not below it.
    assert not (ROOT / "pipeline" / "cli.py").exists()
    assert imported(ROOT / "cli.py") <= set(PACKAGES)
    assert 'textebm = "cli:app"' in (ROOT / "pyproject.toml").read_text()


def test_corpora_holds_corpus_code_only():
    # Storage, progress bars and signal handling moved to common/ (issue: one place per decision).
    assert {f.name for f in (ROOT / "corpora").glob("*.py")} == {
        "__init__.py", "batching.py", "demo.py", "preprocess.py", "registry.py", "stats.py",
        "subword.py", "vocab.py"}


def test_committed_results_name_no_machine_path():
    bad = re.compile(r'"(/work|/tmp|/home|/root|/Users|[A-Z]:\\\\)[^"]*"')
    for d in ("results", "bench/results", "studies/results"):
        for f in (ROOT / d).rglob("*"):
            if f.suffix in (".json", ".jsonl", ".md", ".txt"):
                hit = bad.search(f.read_text(errors="replace"))
                assert hit is None, f"{f.relative_to(ROOT)}: {hit.group(0)}"

"""The package's layout follows its flow: imports only run down it, and the README's map of the code is the tree."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = [
    {"analysis.definitions", "analysis.version", "analysis.checks", "analysis.data", "analysis.devices",
     "analysis.progress", "analysis.spikes", "analysis.wordclass", "analysis.hashing"},
    {"analysis.model", "analysis.settings"},  # settings are resolved against a model's capabilities
    {"analysis.capture"},
    {"analysis.model.loading"},  # loads a model and checks the capture against its own forward pass
    {"analysis.scoring", "analysis.fitted.lens"},  # a fitted lens's maps are read like the head's modules
    {"analysis.report"},
    {"analysis.fitted"},  # fits from the same readings the lens reads
    {"analysis.corpus"},
    {"analysis.charts", "analysis.tables"},
    {"analysis.output"},
    {"analysis.__main__", "analysis"},
]  # fmt: skip
"""Each step may import from its own step and the ones before it, never from a later one."""


def step(module: str) -> int:
    """The step of the most specific name in FLOW that `module` is or lies under."""
    found = [(len(name), index) for index, names in enumerate(FLOW) for name in names
             if name != "analysis" and (module == name or module.startswith(name + "."))]  # fmt: skip
    if found:
        return max(found)[1]
    assert module == "analysis", module
    return len(FLOW) - 1


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("analysis")}
    return found


def test_imports_run_down_the_flow_and_streamlit_stays_out():
    backwards = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        importer = module_name(path)
        backwards += [(importer, name) for name in imports(path) if step(name) > step(importer)]
        assert "streamlit" not in path.read_text(), f"{importer} uses Streamlit: analysis/ is for the CLI and tests too"
    assert not backwards


def test_the_readme_maps_every_package_and_module_of_the_tree():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## How the code is laid out") :]
    mapped = set(re.findall(r"`(analysis/[\w/.]+)`", table))
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "analysis").rglob("*.py") if p.name != "__init__.py"}
    packages = {str(p.parent.relative_to(ROOT)) + "/" for p in (ROOT / "analysis").rglob("__init__.py")}
    packages -= {"analysis/"}
    assert modules <= mapped, sorted(modules - mapped)  # every module has its place in the table
    assert packages <= mapped, sorted(packages - mapped)
    assert all((ROOT / path).exists() for path in mapped), sorted(p for p in mapped if not (ROOT / p).exists())


def test_every_document_the_code_cites_is_in_the_repository_with_the_cited_section():
    """Code cites `docs/<name>.md` (optionally ", section N"): the file exists and has that numbered section."""
    sources = [*ROOT.glob("analysis/**/*.py"), *ROOT.glob("dashboard/*.py"), *ROOT.glob("pages/*.py")]
    citations = {
        (match[0], match[1])
        for path in sources
        for match in re.findall(r"(docs/[a-z_]+\.md)(?:, section (\d+))?", path.read_text())
    }
    assert ("docs/design.md", "6") in citations  # the capabilities' citation of the original demo's definition
    for document, section in citations:
        text = (ROOT / document).read_text()
        assert not section or re.search(rf"^## {section}\. ", text, re.MULTILINE), (document, section)
    assert "DESIGN section" not in "".join(path.read_text() for path in sources)


def test_every_module_or_name_the_code_and_docs_cite_exists():
    """A backticked `analysis.x.y` in a docstring, the README or docs/ names a module, or a name in one, that
    exists (eleven named modules that had moved away)."""
    import importlib

    sources = [*ROOT.glob("analysis/**/*.py"), *ROOT.glob("dashboard/*.py"), *ROOT.glob("pages/*.py"),
               ROOT / "README.md", *ROOT.glob("docs/*.md")]  # fmt: skip
    cited = {name for path in sources for name in re.findall(r"`(analysis(?:\.\w+)+)`", path.read_text())}
    assert "analysis.scoring.ranks" in cited

    def exists(name: str) -> bool:
        """The longest importable prefix of `name`, then each remaining part an attribute of the one before."""
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for part in parts[cut:]:
                if not hasattr(found, part):
                    return False
                found = getattr(found, part)
            return True
        return False

    assert not exists("analysis.metrics") and exists("analysis.load_model")  # the check itself can fail
    assert not [name for name in sorted(cited) if not exists(name)]


def _page_globals(path: Path) -> set[str]:
    """The names a page's top level binds (by assignment, `with … as` or a loop)."""
    bound = set()
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.For):
            targets = [node.target]
        elif isinstance(node, ast.With):
            targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
        bound |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
    return bound


def test_page_functions_take_what_they_use_as_arguments():
    """A page's functions read the page's state from their arguments, never from the script's globals (the
    `context` a page opened, its result): only constants (UPPER_CASE) and type names (CapWords) are shared."""
    reads = []
    for path in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        state = {name for name in _page_globals(path) if not name.isupper() and not name[:1].isupper()}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                own = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                own |= {argument.arg for argument in ast.walk(node.args) if isinstance(argument, ast.arg)}
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
                reads += [(path.name, node.name, name) for name in sorted((used & state) - own)]
    assert not reads, reads

"""The layers of docs/architecture.md, checked: every import in the tree (at module level or inside a
function, and module names given to ``importlib.import_module`` or written as strings) goes only
where its layer may go, the torch-free modules stay torch-free, and no modules import each other in
a circle. A wrong import fails here with the file, the line and the rule."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("amplify", "world", "clients", "exporters", "training", "service", "benchmarks", "amplify_cli")

# package -> the project packages it may import (itself always). The top layer, amplify_cli, may import all.
ALLOWED: dict[str, set[str]] = {
    "amplify": set(),                               # the library: nothing of the project above it
    "world": set(),                                 # the built-in world: numpy only
    "clients": {"world"},                           # the clients (their own distribution); world for --env builtin
    "exporters": {"amplify"},
    "training": {"amplify", "world", "clients"},     # clients: how a robot executes chunks (below)
    "service": {"amplify", "exporters", "clients"},  # clients: the wire codec only (below)
    "benchmarks": {"amplify", "world", "clients", "exporters", "training", "service"},
    "amplify_cli": set(PACKAGES),
}
# Narrower rules: (importing package or module, imported module prefixes it may reach in that package).
ONLY: dict[tuple[str, str], tuple[str, ...]] = {
    ("service", "clients"): ("clients.codec",),                          # one codec for both sides
    ("training", "clients"): ("clients.libero.execution",),              # eval-world runs chunks as the robot does
    ("service", "exporters"): ("exporters.runtime", "exporters.manifest"),  # serving exports, not making them
}
# The launcher of ``python -m amplify``: only ever run, never imported (docs/architecture.md).
EXCEPTIONS = {("amplify/__main__.py", "amplify_cli.main")}
# Modules that must not import torch (or the torch-based library) at all: servers of exported
# models and the clients run without it.
TORCH_FREE = ("amplify/config.py", "amplify/info.py", "amplify/inputs.py", "amplify/defaults.py",
              "exporters/manifest.py", "exporters/runtime.py", "clients/", "world/", "service/codecs.py",
              "service/errors.py")
TORCH_FREE_ALLOWED_AMPLIFY = ("amplify", "amplify.config", "amplify.info", "amplify.inputs", "amplify.defaults")
# Inside the service, the inference layer knows nothing of HTTP.
INFERENCE_LAYER = ("service/backends/", "service/batching.py", "service/engine.py", "service/text.py")
HTTP_MODULES = ("fastapi", "starlette", "uvicorn", "service.app", "service.deps", "service.routes", "service.middleware",
                "service.codecs", "service.schemas", "service.cli")
# Circles that are allowed, each with its reason: AMPLIFY.load / from_parts / load_vision_weights
# delegate to amplify.loading (which builds AMPLIFY), importing it when called.
ALLOWED_CYCLE_EDGES = {("amplify.policy", "amplify.loading")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, with_names: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, relative ones resolved, plus dotted project module
    names written as strings (``importlib.import_module("service.cli")``, command tables).
    ``with_names`` adds ``X.a`` for ``from X import a`` (``a`` may be a module of package ``X``)."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                out.append((node.lineno, module))
                if with_names:
                    out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
            else:
                out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            top = text.split(".")[0]
            if top in PACKAGES and all(p.isidentifier() for p in text.split(".")) and "." in text:
                out.append((node.lineno, text))
    return out


def _files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_layers_import_only_what_they_may():
    problems = []
    for path in _files():
        rel = path.relative_to(REPO).as_posix()
        pkg = rel.split("/")[0]
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top not in PACKAGES or top == pkg or (rel, module) in EXCEPTIONS:
                continue
            if top not in ALLOWED[pkg]:
                problems.append(f"{rel}:{line}: {pkg} may not import {module} (allowed: {sorted(ALLOWED[pkg]) or 'none'})")
            elif (pkg, top) in ONLY and not module.startswith(ONLY[(pkg, top)]):
                problems.append(f"{rel}:{line}: {pkg} may import only {ONLY[(pkg, top)]} of {top}, not {module}")
    assert not problems, "imports across layers (docs/architecture.md):\n" + "\n".join(problems)


def test_torch_free_modules_stay_torch_free():
    problems = []
    for path in _files():
        rel = path.relative_to(REPO).as_posix()
        if not rel.startswith(TORCH_FREE):
            continue
        for line, module in _imports(path):
            top = module.split(".")[0]
            heavy = top in ("torch", "einops", "vector_quantize_pytorch", "safetensors")
            library = top == "amplify" and module not in TORCH_FREE_ALLOWED_AMPLIFY
            if rel == "exporters/runtime.py" and top == "torch":
                heavy = False  # the TorchScript runtime imports torch when it loads a TorchScript export
            if heavy or library:
                problems.append(f"{rel}:{line}: imports {module}, but this module must run without torch")
    assert not problems, "\n".join(problems)


def test_inference_layer_knows_nothing_of_http():
    problems = [f"{p.relative_to(REPO).as_posix()}:{line}: imports {m}" for p in _files()
                if p.relative_to(REPO).as_posix().startswith(INFERENCE_LAYER)
                for line, m in _imports(p) if m.startswith(HTTP_MODULES)]
    assert not problems, "the service's inference layer imports HTTP modules:\n" + "\n".join(problems)


def test_no_import_cycles():
    modules = {_module_name(p): p for p in _files()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, module in _imports(path, with_names=True):
            # the imported module, or the package that holds an imported name
            target = module if module in modules else module.rsplit(".", 1)[0]
            if target in modules and target != name and (name, target) not in ALLOWED_CYCLE_EDGES:
                graph[name].add(target)
    # a package's __init__ importing its own modules is no circle: drop edges into a package from inside it
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles = _strongly_connected(graph)
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checks_catch_a_wrong_import(tmp_path, monkeypatch):
    """The rules are not vacuous: a library module naming the service is reported."""
    bad = REPO / "amplify" / "_architecture_probe.py"
    bad.write_text('import importlib\nimportlib.import_module("service.app")\n')
    try:
        try:
            test_layers_import_only_what_they_may()
        except AssertionError as e:
            assert "amplify/_architecture_probe.py:2: amplify may not import service.app" in str(e)
        else:
            raise AssertionError("a library module importing the service was not reported")
    finally:
        bad.unlink()

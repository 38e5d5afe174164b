"""The shape of the house, checked: every module imports, no import circle (lazy imports included), the demo
package stays outside the library, no module over 400 lines, and the pure config side never loads MindSpore."""

import ast
import importlib
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "mindrlhf")
MAX_LINES = 400


def _modules():
    """{dotted name: path} of every module in mindrlhf/ (packages by their __init__)."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[: -len(".py")]
                parts = rel.split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = os.path.join(folder, name)
    return out


MODULES = _modules()


def _is_main_block(node):
    t = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _imports(module, path):
    """mindrlhf modules `module` imports anywhere in its file (top level or inside a function)."""
    is_package = path.endswith("__init__.py")
    found = set()
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    # An `if __name__ == "__main__":` block is an entry-point shim (it runs only as a script), not library code.
    tree.body = [n for n in tree.body if not _is_main_block(n)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while (
                name and name not in MODULES
            ):  # `import mindrlhf.a.b.Name`-style targets: the nearest module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _find_cycle(graph):
    """One import circle as a list of modules, or None (iterative DFS with colours)."""
    state = {}
    for root in sorted(graph):
        if root in state:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                path.pop()
            elif state.get(child) == "open":
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_scan_sees_modules_and_finds_a_planted_circle():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    assert "mindrlhf.configs.loader" in graph["mindrlhf.configs.run_config"]
    assert "mindrlhf.models.llama.config" in graph["mindrlhf.configs.run_config"]
    assert "mindrlhf.utils.io" in graph["mindrlhf.utils.checkpoint"]
    graph["mindrlhf.configs.loader"] = graph["mindrlhf.configs.loader"] | {"mindrlhf.configs.run_config"}
    assert _find_cycle(graph) == [
        "mindrlhf.configs.loader",
        "mindrlhf.configs.run_config",
        "mindrlhf.configs.loader",
    ]


def test_no_import_circle_in_the_library():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    assert _find_cycle(graph) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_library_never_imports_the_demo():
    users = sorted(
        m
        for m, p in MODULES.items()
        if not m.startswith("mindrlhf.demo")
        and any(d == "mindrlhf.demo" or d.startswith("mindrlhf.demo.") for d in _imports(m, p))
    )
    assert users == []


def test_no_module_over_400_lines():
    sizes = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_pure_config_modules_do_not_load_mindspore():
    code = (
        "import sys; import mindrlhf.parallel.config, mindrlhf.parallel.runtime, mindrlhf.algorithms.ppo_math, "
        "mindrlhf.data, mindrlhf.demo, mindrlhf.utils.io; print('mindspore' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"

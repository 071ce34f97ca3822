"""The tensor package's modules form a stack: each imports only modules below it, at the top of
the file (no import inside a function to dodge a cycle)."""

import ast
import pathlib

import backprop.tensor

PACKAGE = pathlib.Path(backprop.tensor.__file__).parent
OPTIONAL = {"cupyx", "cupy"}  # packages that may be missing, imported where they are used


def _imports(path):
    """(the modules of this package it imports, anywhere in the file; imports inside functions)."""
    tree = ast.parse(path.read_text())
    local, inner = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                local.add(node.module.split(".")[0])
            else:
                local.update(a.name for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names = [a.name.split(".")[0] for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    names = ["." * sub.level + (sub.module or "")]
                else:
                    continue
                inner += [(node.name, n) for n in names if n not in OPTIONAL]
    return local, inner


def test_no_import_inside_a_function():
    found = {p.name: inner for p in sorted(PACKAGE.glob("*.py")) if (inner := _imports(p)[1])}
    assert not found


# the order of the package's docstring: each module imports only modules before it
STACK = ["kernels", "core", "autograd", "function", "ops_reduce", "ops_elementwise", "ops_shape",
         "ops_linalg", "ops_loss", "dense", "derivatives"]


def test_the_modules_form_a_stack():
    graph = {p.stem: _imports(p)[0] for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert sorted(graph) == sorted(STACK), "a new module: give it its place in STACK"
    for k, m in enumerate(STACK):
        above = graph[m] - set(STACK[:k])
        assert not above, f"{m} imports {sorted(above)}, which are not below it"
    assert STACK[1] == "core" and graph["core"] == {"kernels"}

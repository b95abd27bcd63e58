"""The backend seam holds: what differs per backend lives in `tb_explain/backend/`.

Read from the package's source with `ast` (no import), so these run the same
on every backend:

- no module outside `tb_explain/backend/` imports TensorFlow, JAX or PyTorch
  (`summary/graph.py`, the op graph, is the one exception);
- at most 2 branches on the backend's name outside it (`summary/graph.py`
  aside): a new backend is one new module, not edits across compute/;
- no `einsum` with an ellipsis in its subscripts: TensorFlow 2.21's einsum
  with `...` aborts (`free(): invalid pointer`) or returns wrong values on
  some shapes (found by CI on a per-sample sum over `"np...,p->n..."`).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tb_explain"
FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "torch")
#: The op graph is TensorFlow's own format, written where TensorFlow runs.
GRAPH = "summary/graph.py"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        yield relative, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _outside_backend():
    return [(name, tree) for name, tree in _modules()
            if not name.startswith("backend/") and name != GRAPH]


def _framework(module_name):
    return module_name is not None and module_name.split(".")[0] in FRAMEWORKS


def _framework_imports(tree):
    """`(line, module)` of every import of a framework in `tree`: import
    statements and `importlib.import_module` / `__import__` of a literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _framework(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _framework(node.module):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("importlib.import_module", "import_module", "__import__") and \
                    isinstance(node.args[0].value, str) and _framework(node.args[0].value):
                found.append((node.lineno, node.args[0].value))
    return found


def _is_backend_name_call(node):
    return isinstance(node, ast.Call) and not node.args and \
        ast.unparse(node.func) in ("backend.name", "keras.backend.backend", "name")


def _backend_name_branches(tree):
    """Lines comparing the backend's name (`backend.name()`,
    `keras.backend.backend()`) with anything."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare) and any(
        _is_backend_name_call(side) for side in (node.left, *node.comparators))]


def _ellipsis_einsums(tree):
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("einsum")
            and node.args and isinstance(node.args[0], ast.Constant)
            and "..." in str(node.args[0].value)]


def test_the_checks_see_what_they_look_for():
    tree = ast.parse(
        "import tensorflow as tf\nfrom jax import numpy\nimport importlib\n"
        "t = importlib.import_module('torch.utils')\nimport numpy\nfrom . import jax\n"
        "if backend.name() == 'jax': pass\nok = 'torch' != keras.backend.backend()\n"
        "y = ops.einsum('np...,p->n...', a, b)\nz = np.einsum('ij,j->i', a, b)\n")
    assert _framework_imports(tree) == [(1, "tensorflow"), (2, "jax"), (4, "torch.utils")]
    assert _backend_name_branches(tree) == [7, 8]
    assert _ellipsis_einsums(tree) == [9]


def test_only_the_backend_room_imports_a_framework():
    found = {name: imports for name, tree in _outside_backend()
             if (imports := _framework_imports(tree))}
    assert found == {}, f"framework imports outside tb_explain/backend/: {found}"


def test_at_most_two_branches_on_the_backend_name_outside_the_backend_room():
    branches = {name: lines for name, tree in _outside_backend()
                if (lines := _backend_name_branches(tree))}
    assert sum(len(lines) for lines in branches.values()) <= 2, branches


@pytest.mark.parametrize("name", ["jax.py", "tensorflow.py", "torch.py"])
def test_each_backend_module_is_one_module_of_the_room(name):
    assert (PACKAGE / "backend" / name).is_file()
    tree = ast.parse((PACKAGE / "backend" / name).read_text(encoding="utf-8"))
    # A backend module imports its own framework, never another's.
    own = {"jax.py": ("jax", "jaxlib"), "tensorflow.py": ("tensorflow",),
           "torch.py": ("torch",)}[name]
    others = [m for _, m in _framework_imports(tree) if m.split(".")[0] not in own]
    assert others == []


def test_no_einsum_with_an_ellipsis():
    found = {name: lines for name, tree in _modules() if (lines := _ellipsis_einsums(tree))}
    assert found == {}, f"einsum with '...' (TensorFlow 2.21 crashes on some shapes): {found}"

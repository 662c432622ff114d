"""The package's face to static tools and to the interpreter: a literal __all__, dir(), the version."""

from __future__ import annotations

import ast
import importlib.metadata

import lorasweep

from .conftest import ROOT


def _literal_all() -> list[str]:
    """lorasweep/__init__.py's __all__ as a static tool reads it: without running the module."""
    tree = ast.parse((ROOT / "lorasweep" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            assert isinstance(node.value, ast.List), "__all__ must be a list literal"
            names = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
            assert len(names) == len(node.value.elts) and all(isinstance(n, str) for n in names)
            return names
    raise AssertionError("lorasweep/__init__.py assigns no __all__")


def test_all_is_a_literal_that_names_what_the_package_gives():
    names = _literal_all()
    assert names == lorasweep.__all__
    assert {"run", "resume", "trials", "best", "promote", "export", "UserError", "__version__"} <= set(names)
    for name in names:
        assert getattr(lorasweep, name) is not None, name  # each name resolves (most load lazily)


def test_dir_lists_the_api_and_not_the_modules_own_imports():
    listed = dir(lorasweep)
    assert {"run", "trials", "best", *lorasweep.__all__} <= set(listed)
    assert not {"importlib", "version", "Any", "TYPE_CHECKING"} & set(listed)


def test_the_version_is_the_installed_packages():
    assert lorasweep.__version__ == importlib.metadata.version("lorasweep")

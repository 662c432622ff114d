"""Metrics of the user's own, named by import path: `module:function`, so that any process can load
them (a worker of `run --workers N`, `lorasweep worker` on another machine, a later `resume`).

A metric function receives the greedy generations and their references, two lists of strings, and
returns a number: fn(outputs, references) -> float (MetricFn). Its module is looked for in one folder
first (the sweep file's, or where the Python API found a function's module), then among the
installed packages. The folder is never left on sys.path: the module file is loaded from it by its
spec, and the folder stands at the head of sys.path only while that module runs its top level (so
that it may import a neighbour of its own).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._typing import did_you_mean
from .config import METRICS, InputError
from .runner import MetricFn

if TYPE_CHECKING:
    from .specs import EvalSpec

# module:function, each a dotted name of identifiers (a function may sit in a class: Scores.bleu)
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")
_NAME = re.compile(r"[A-Za-z_][\w.-]*")  # a metric's name: an MLflow metric key and a column
EXAMPLE = "my_metrics:tone_hit"
# Modules this process loaded from a folder by name: another folder's module of the same name may
# replace one of these (each test, each study), never a module that something else imported.
_FROM_FOLDERS: dict[str, str] = {}


@dataclass(frozen=True)
class MetricSource:
    """Where a metric function is imported from: `module:function`, and the folder looked in before
    the installed packages (None: the sweep file's folder, given when it is loaded)."""

    path: str
    folder: str | None = None

    def load(self, name: str, sweep_folder: Path | None, *, check_signature: bool = True) -> MetricFn:
        """The function, imported in this process; InputError (in the project's grammar) if it
        cannot be found, does not import, or is not a metric function."""
        if self.folder is None:
            return load_metric(name, self.path, sweep_folder, check_signature=check_signature)
        what = f"the custom metric {name!r}"  # a function the Python API was given
        return load_metric(name, self.path, Path(self.folder), check_signature=check_signature, what=what)


def metric_name_problem(name: Any) -> str | None:
    """Why `name` cannot name a metric of the user's (a built-in metric's name, or not a plain
    word), or None."""
    if name in METRICS:
        return (
            f"a custom metric must not take a built-in metric's name, but got metrics={[name]}. "
            "Rename it (e.g. my_f1)."
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (
            "a custom metric's name must start with a letter and use letters, digits, '_', '.' and '-', "
            f"but got name={name!r}. It names an MLflow metric and a column: use a word such as tone_hit."
        )
    return None


def metric_problems(spec: EvalSpec, folder: Path, *, load: bool = True) -> list[tuple[str, str]]:
    """(name, what is wrong) for each of eval.metrics that cannot score: a name a built-in metric
    has, or (with `load`) a path that does not import as a metric function from `folder` (the sweep
    file's) or the installed packages. A sweep stored with a study is checked without `load`: its
    metrics are imported where trials run, and promote or best need none of them."""
    found = []
    for name, path in spec.metric_paths().items():
        wrong = metric_name_problem(name)
        if wrong is None and load:
            try:
                load_metric(name, path, folder)
            except InputError as e:
                wrong = str(e)
        if wrong is not None:
            found.append((name, wrong))
    return found


def load_metric(
    name: str, path: str, folder: Path | None, *, check_signature: bool = True, what: str | None = None
) -> MetricFn:
    """Import `path` (module:function) from `folder` first, else from the installed packages.
    Raises InputError naming `what` (default eval.metrics.<name>), what was found and the fix."""
    what = what or f"eval.metrics.{name}"
    found = _PATH.fullmatch(str(path))  # a YAML value may be anything
    if found is None:
        raise InputError(
            f"{what} must be module:function, but got path={path!r}. Write the module's import name, a "
            f"colon and the function's name, e.g. {EXAMPLE} for tone_hit in my_metrics.py beside the "
            "sweep file."
        )
    module_name, attribute = found.groups()
    module = _import(what, path, module_name, folder)
    target: Any = module
    for i, part in enumerate(attribute.split(".")):
        if not hasattr(target, part):
            owner = ".".join([module_name, *attribute.split(".")[:i]])
            names = [n for n in dir(target) if not n.startswith("_")]
            raise InputError(
                f"{what} must name a function of module {module_name}, but got path={path!r}: {owner} "
                f"has no attribute {part!r}.{did_you_mean(part, names) or ' Check the spelling.'}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise InputError(
            f"{what} must name a function, but got path={path!r}, which is {target!r} "
            f"({type(target).__name__}). Name a function fn(outputs, references) -> float."
        )
    if check_signature and (signature := _wrong_signature(target)) is not None:
        raise InputError(
            f"{what} must take two arguments, the generations and their references (two lists of "
            f"strings), but got path={path!r} with signature {signature}. Define it as "
            f"def {attribute.rsplit('.', 1)[-1]}(outputs, references) -> float."
        )
    return target


def importable_source(fn: Callable[..., Any]) -> MetricSource | None:
    """The MetricSource another process imports `fn` back by (module:qualname, and the folder its
    top-level module lies in), or None where it cannot: a lambda, a closure, a function defined in
    __main__ (a script, a notebook cell), or a name that no longer leads to this very object."""
    module_name, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str) or module_name == "__main__":
        return None
    if "<" in qualname or module_name not in sys.modules:  # <lambda>, <locals>
        return None
    target: Any = sys.modules[module_name]
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not fn:
        return None
    return MetricSource(f"{module_name}:{qualname}", _root_folder(module_name))


def why_not_importable(fn: Callable[..., Any]) -> str:
    """What keeps `fn` in the calling process, in a few words."""
    qualname, module_name = getattr(fn, "__qualname__", repr(fn)), getattr(fn, "__module__", None)
    if "<lambda>" in qualname:
        return "a lambda has no name to import it by"
    if "<locals>" in qualname:
        return "a function defined inside another function cannot be imported"
    if module_name == "__main__":
        return "it is defined in __main__ (a script or a notebook cell), which another process cannot import"
    return f"{module_name}:{qualname} does not import back to it"


def _root_folder(module_name: str) -> str | None:
    """The folder holding the module's top-level package (or the module file itself); None for a
    module without a file (builtins)."""
    top = sys.modules.get(module_name.partition(".")[0])
    file = getattr(top, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)


def _import(what: str, path: str, module_name: str, folder: Path | None) -> ModuleType:
    top = module_name.partition(".")[0]
    spec = None
    if folder is not None and folder.is_dir():
        spec = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
    try:
        if folder is not None and spec is not None and spec.loader is not None:
            _load_top(what, top, spec, folder)
            with _on_path(folder):  # a package's submodule imports its neighbours from there too
                return importlib.import_module(module_name)
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise _import_failed(what, path, e) from None  # the module itself imports something missing
        here = folder is not None and folder.is_dir()
        where = f"in {folder} or " if here else ""
        gone = f" ({folder} does not exist on this machine)" if folder is not None and not here else ""
        put = f"in {folder}" if folder is not None else "beside the sweep file"
        raise InputError(
            f"{what} must name a module found beside the sweep file or installed, but got path={path!r}: "
            f"no module {e.name!r} {where}among the installed packages{gone}. Put {top}.py {put}, or "
            "pip install the package that holds it."
        ) from None
    except InputError:
        raise
    except (Exception, SystemExit) as e:
        raise _import_failed(what, path, e) from None


def _import_failed(what: str, path: str, error: BaseException) -> InputError:
    return InputError(
        f"{what} must name a module that imports, but got path={path!r}, whose import raised "
        f"{type(error).__name__}: {error}. Fix the module (import it in Python to see the traceback)."
    )


def _load_top(what: str, top: str, spec: importlib.machinery.ModuleSpec, folder: Path) -> None:
    """The top-level module `top` as found in `folder`, in sys.modules (loaded once per file)."""
    loaded = sys.modules.get(top)
    if loaded is not None and _origin(loaded) == _spec_origin(spec):
        return
    if loaded is not None and top not in _FROM_FOLDERS:
        raise InputError(
            f"{what} must name a module whose name no other module took, but got {top!r} in {folder}, "
            f"while this process imported {top!r} from {_origin(loaded) or 'elsewhere'}. Rename "
            f"{top} beside the sweep file (e.g. my_{top})."
        )
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]  # another folder's module of this name, loaded here before
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        with _on_path(folder):
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[top]
        raise
    _FROM_FOLDERS[top] = str(folder)


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path while a module loaded from it runs its imports, and then gone."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _origin(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve()) if file else None


def _spec_origin(spec: importlib.machinery.ModuleSpec) -> str | None:
    return str(Path(spec.origin).resolve()) if spec.origin and spec.has_location else None


def _wrong_signature(fn: Callable[..., Any]) -> str | None:
    """The signature of `fn` where it cannot be called as fn(outputs, references), else None (also
    where Python cannot tell, as for some built-in functions)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind([], [])
    except TypeError:
        return str(signature)
    return None

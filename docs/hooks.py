"""MkDocs hooks: show mkdocstrings the package as it is installed.

search/ and objectives/ install as lorasweep.search and lorasweep.objectives (setuptools'
package-dir), which griffe cannot follow: from the repository it finds lorasweep/ alone, and the
editable install's finder maps only the top-level name. A tree of links in build/docs-api gives it
that layout before any page is rendered, in a fresh clone as in a worked-in one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "docs-api"


def link_tree(tree: Path = TREE) -> Path:
    """(Re)build `tree`/lorasweep: lorasweep/'s files, with search/ and objectives/ linked in."""
    package = tree / "lorasweep"
    shutil.rmtree(tree, ignore_errors=True)
    package.mkdir(parents=True)
    for path in (ROOT / "lorasweep").iterdir():
        if path.suffix in {".py", ".typed"}:
            (package / path.name).symlink_to(path)
    (package / "search").symlink_to(ROOT / "search", target_is_directory=True)
    (package / "objectives").symlink_to(ROOT / "objectives", target_is_directory=True)
    return tree


# Before mkdocstrings makes its Python handler, which expands the search paths as globs: a path
# that does not exist yet would be dropped.
@event_priority(100)
def on_config(config: Any) -> Any:
    link_tree()
    return config

"""Write the files generated from the sweep file's models: `python -m lorasweep.search.sweepfile`."""

from __future__ import annotations

import json
from pathlib import Path

from . import json_schema, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "spaces" / "sweep-file.schema.json"
REFERENCE = ROOT / "docs" / "reference" / "sweep-file.md"

if __name__ == "__main__":
    SCHEMA.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {SCHEMA.relative_to(ROOT)} and {REFERENCE.relative_to(ROOT)}")

"""The README and the manual in docs/: links that resolve, generated pages that match their source.

`make docs` (mkdocs build --strict) checks the whole site, the navigation and every anchor; CI runs
it apart from the tests, as it needs the docs extra. These checks need nothing beyond the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT, docs_script

# [text](target) and ![alt](target), the target up to its closing parenthesis or a title
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _relative_links(page: Path) -> list[str]:
    """The targets of a Markdown page's links to files (not URLs, not anchors on the page), outside code."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code: `[a](b)` there is an example, not a link
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _reference_generator() -> ModuleType:
    return docs_script("reference")


def test_the_readme_is_a_short_page_whose_every_link_resolves():
    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) < 250
    links = _relative_links(readme)
    assert any(link.startswith("docs/") for link in links)  # it points into the manual
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.mark.parametrize(
    "page", sorted((ROOT / "docs").rglob("*.md")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_link_of_the_manual_resolves_inside_docs(page):
    """MkDocs can only link to its own pages and files: a link out of docs/ is a broken link on the site."""
    docs = (ROOT / "docs").resolve()
    for link in _relative_links(page):
        target = (page.parent / link.split("#", 1)[0]).resolve()
        assert target.is_relative_to(docs), f"{page.name} links out of docs/: {link}"
        assert target.exists(), f"{page.name} links to a file that does not exist: {link}"


def test_the_committed_cli_reference_is_what_the_parser_generates():
    generator = _reference_generator()
    committed = generator.PAGE.read_text(encoding="utf-8")
    assert committed == generator.render(), "docs/reference/cli.md is stale: run python docs/reference.py"


def test_the_cli_reference_has_a_section_with_every_flag_for_each_command():
    from lorasweep.search.cli import build_parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    commands = _reference_generator()._commands(build_parser())
    assert [name for name, _, _ in commands] == re.findall(r"^## `lorasweep (\S+)`$", page, re.MULTILINE)
    for name, _, parser in commands:
        section = page.split(f"## `lorasweep {name}`", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}" in section, f"lorasweep {name}: {option} missing from the CLI reference"


# -- the example outputs: docs/examples.py writes them from the demo; test_demo.py checks them ----
def _examples_generator() -> ModuleType:
    return docs_script("examples")


def test_every_marked_example_shows_its_command_and_is_one_lorasweep_accepts():
    from lorasweep.search.cli import build_parser

    generator = _examples_generator()
    found = generator.all_examples()
    assert {e.page.name for e in found} >= {"choosing.md", "commands.md"}
    for example in found:
        assert example.body.startswith(f"$ {example.command}\n"), f"{example.page.name}: {example.command}"
        build_parser().parse_args(example.command.split()[1:])  # a flag that is gone exits 2 here
        assert generator.normalize(example.body) == example.body, "a figure that changes run to run"


def test_the_examples_and_the_generated_references_stay_apart():
    """docs/reference/ is rewritten whole by its own generators: an example marked there would be
    overwritten, and the examples' generator never writes there."""
    generator = _examples_generator()
    reference = ROOT / "docs" / "reference"
    assert not any(page.is_relative_to(reference) for page in generator.pages())
    for page in reference.glob("*.md"):
        assert "<!-- output:" not in page.read_text(encoding="utf-8"), page.name
    assert _reference_generator().PAGE.is_relative_to(reference)


def test_what_changes_from_run_to_run_is_a_placeholder_and_the_rest_must_match(tmp_path):
    generator = _examples_generator()
    printed = (
        "trial 1: lr=0.003714  (mlflow run e224b1a5395c4d1e84f4b977954369cc)\n"
        f"export: fp32 (5.6 s, 3.7 MB) to {tmp_path}/exports/demo/v1\n"
        "sha256=" + "ad" * 32 + "\n"
        "trial  state     f1      seconds  note\n"
        "0      COMPLETE  0.8629  126.4    -\n"
        "1      PRUNED    -       3.3      pruned at step 20\n"
        "\n"
        "study  last activity\n"
        "demo   2026-12-06 12:10\n"
        "timing: load average 11.4 on 2 cores; ? unreliable (spread over 1.5x): pytorch (spread 5.9x)\n"
    )
    assert generator.normalize(printed, tmp_path) == (
        "trial 1: lr=0.003714  (mlflow run <run-id>)\n"
        "export: fp32 (… s, 3.7 MB) to exports/demo/v1\n"
        "sha256=<sha256>\n"
        "trial  state     f1      seconds  note\n"
        "0      COMPLETE  0.8629  …        -\n"
        "1      PRUNED    -       …        pruned at step 20\n"
        "\n"
        "study  last activity\n"
        "demo   …\n"
        "timing: load average … on … cores; ? unreliable (spread over 1.5x): …\n"
    )
    # another machine's seconds (the table aligned to them) normalize to the same text
    elsewhere = printed.replace("126.4 ", "12.5  ").replace("5.6 s", "61.0 s")
    assert generator.normalize(elsewhere, tmp_path) == generator.normalize(printed, tmp_path)


def test_a_committed_example_that_differs_from_the_command_fails_with_a_diff_and_the_fix():
    generator = _examples_generator()
    found = generator.all_examples()
    fresh = {e.command: e.body for e in found}
    assert generator.differences(fresh) == []
    command = next(e.command for e in found if e.command.startswith("lorasweep compare 0 1"))
    fresh[command] = fresh[command].replace("0.8629", "0.8630", 1)
    (diff,) = generator.differences(fresh)
    assert "-  f1 " in diff and "0.8630" in diff and "docs/choosing.md" in diff
    assert "run python docs/examples.py" in generator.stale_message([diff])

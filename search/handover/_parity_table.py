"""The parity gate's findings as the tables promote and export print."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._parity import REPRODUCED, Measured, Parity

if TYPE_CHECKING:
    from ._bundle_parity import BundleParity

# The gated columns and the check (_parity.gate) behind each: a figure decides the champion only
# where its model carries that check (int8's logits and tokens, for one, are measured, not gated).
_GATED = (
    ("change", "eval perplexity"),
    ("max |dlogit|", "largest logit difference"),
    ("greedy same", "greedy generation"),
)


def format_parity(parity: Parity) -> str:
    """The gate's findings as a table: the reported columns, then the gated ones; a gated column's
    figure in parentheses is measured on that model but not gated."""
    reported = f"{'':<9}{'by':<36}{'size':>9}{'load s':>8}{'ms/token':>10}{'speed':>7}{'perplexity':>12}"
    gated = f"{'change':>9}{'max |dlogit|':>14}{'greedy same':>14}"
    lines = [
        f"{'reported':<{len(reported)}} | gated",
        f"{reported} |{gated}",
    ]
    for m in parity.models:
        lines.append(
            f"{m.name:<9}{m.how:<36}{mb(m.size_bytes):>9}{m.load_seconds:>8.2f}{m.ms_per_token:>10.2f}"
            f"{m.speedup:>6.1f}x{m.perplexity:>12.5g} |"
            + ("" if m.name == "pytorch" else gated_cells(m, parity.prompts))
        )
    where = {
        column: [m.name for m in parity.models if check in {c.name for c in m.checks}]
        for column, check in _GATED
    }
    lines.append(
        "gated (decide the champion): "
        + ", ".join(f"{column} ({', '.join(names)})" for column, names in where.items() if names)
        + "; in ( ): measured, not gated"
    )
    lines.append(
        f"ms/token, speed: medians of {parity.speed_runs} runs over {parity.speed_prompts} eval prompts "
        "(greedy, batch 1); speed is PyTorch's ms/token over the model's in the same run"
    )
    lines += reproduced(parity.models[0])
    if parity.eval_loss_note:
        lines.append(f"PyTorch eval loss {parity.eval_loss_note}")
    verdict = (
        "parity gate: passed" if parity.passed else "parity gate: FAILED\n  " + "\n  ".join(parity.failures)
    )
    return "\n".join([*lines, verdict])


def gated_cells(m: Measured, prompts: int) -> str:
    """The gated columns of one row; a figure its model is not gated on in parentheses."""
    tokens = f"{m.identical}/{prompts}" + (f" +{m.ties} tie" if m.ties else "")
    cells = (f"{m.perplexity_change:+.2%}", f"{m.max_logit_diff:.2g}", tokens)
    checked = {c.name for c in m.checks}
    shown = [
        cell if check in checked else f"({cell})" for cell, (_, check) in zip(cells, _GATED, strict=True)
    ]
    return f"{shown[0]:>9}{shown[1]:>14}{shown[2]:>14}"


def reproduced(m: Measured, who: str = "") -> list[str]:
    """The gate's check that the rebuilt PyTorch model gives its trial's eval loss, as a line."""
    return [f"gated: {who}{c.name} {c.measured}, {c.limit}" for c in m.checks if c.name == REPRODUCED]


def mb(size: int) -> str:
    """A size in bytes as the tables show it."""
    return f"{size / 2**20:.1f} MB"


def format_bundle(parity: BundleParity) -> str:
    """An adapter bundle's findings: what it weighs against the merged exports it replaces, then a
    row for the base alone and one per adapter (reported columns | gated ones), then the switch."""
    reported = (
        f"{'':<12}{'rank':>5}{'size':>9}{'load ms':>9}{'switch ms':>11}{'ms/token':>10}{'merged':>8}"
        f"{'speed':>7}"
    )
    gated = f"{'change':>9}{'max |dlogit|':>14}{'greedy same':>14}"
    k = len(parity.adapters)
    lines = [
        f"bundle: {mb(parity.size_bytes)} (one base {mb(parity.base.size_bytes)} + {k} adapters) against "
        f"{k} merged exports {mb(parity.merged_bytes)} "
        f"({parity.size_bytes / max(parity.merged_bytes, 1):.2f}x)",
        f"{'reported':<{len(reported)}} | gated",
        f"{reported} |{gated}",
        f"{'no adapter':<12}{'-':>5}{mb(parity.base.size_bytes):>9}"
        f"{'-':>9}{'-':>11}{'-':>10}{'-':>8}{'-':>7} |" + gated_cells(parity.base, parity.prompts),
    ]
    for a in parity.adapters:
        m = a.measured
        lines.append(
            f"{a.name:<12}{a.rank:>5}{mb(a.size_bytes):>9}{a.load_ms:>9.2f}{a.switch_ms:>11.3f}"
            f"{m.ms_per_token:>10.2f}{a.merged_ms_per_token:>8.2f}{m.speedup:>6.2f}x |"
            + gated_cells(m, parity.prompts)
        )
    lines += [
        f"{parity.switch.name}: {'same' if parity.switch.passed else 'NOT the same'} "
        f"({parity.switch.measured})",
        "size: the adapter's file; merged: the ms/token of the trial's merged fp32 export; speed: merged "
        f"over bundle, medians of {parity.speed_runs} runs over {parity.speed_prompts} eval prompts "
        "(greedy, batch 1)",
        "gated (decide the champion): every row's change, max |dlogit| and greedy same, and the switch",
    ]
    for a in parity.adapters:
        lines += reproduced(a.measured, f"{a.name}: ")
    verdict = (
        "parity gate: passed" if parity.passed else "parity gate: FAILED\n  " + "\n  ".join(parity.failures)
    )
    return "\n".join([*lines, verdict])

"""The parity gate's findings as the tables promote and export print."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._parity import MS_DECIMALS, REPRODUCED, WIDE_SPREAD, Measured, Parity

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
    reported = (
        f"{'':<9}{'by':<36}{'size':>9}{'load s':>8}{'ms/token':>10}{'spread':>14}{'speed':>8}"
        f"{'perplexity':>12}"
    )
    gated = f"{'change':>9}{'max |dlogit|':>14}{'greedy same':>14}"
    lines = [
        f"{'reported':<{len(reported)}} | gated",
        f"{reported} |{gated}",
    ]
    for m in parity.models:
        lines.append(
            f"{m.name:<9}{m.how:<36}{mb(m.size_bytes):>9}{m.load_seconds:>8.2f}{ms_cell(m):>10}{spread_cell(m):>14}"
            f"{speed_cell(m, parity.models[0], 1):>8}{m.perplexity:>12.5g} |"
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
        "(greedy, batch 1); speed is PyTorch's ms/token over the model's, as printed"
    )
    lines += timing_notes(parity.models)
    lines += reproduced(parity.models[0])
    if parity.eval_loss_note:
        lines.append(f"PyTorch eval loss {parity.eval_loss_note}")
    verdict = (
        "parity gate: passed" if parity.passed else "parity gate: FAILED\n  " + "\n  ".join(parity.failures)
    )
    return "\n".join([*lines, verdict])


def ms_cell(m: Measured) -> str:
    """A model's ms/token, the median of its rounds, with '?' if it is unreliable."""
    return f"{m.ms_per_token:.{MS_DECIMALS}f}" + ("?" if m.unreliable else "")


def spread_cell(m: Measured) -> str:
    """Its fastest and slowest rounds' ms/token; '-' for a report from before they were kept."""
    return f"{min(m.ms_runs):.{MS_DECIMALS}f}-{max(m.ms_runs):.{MS_DECIMALS}f}" if m.ms_runs else "-"


def speed_cell(m: Measured, reference: Measured, decimals: int) -> str:
    """The speed ratio, '?' when either figure it divides is unreliable."""
    return f"{m.speedup:.{decimals}f}x" + ("?" if m.unreliable or reference.unreliable else "")


def timing_notes(models: list[Measured]) -> list[str]:
    """The load the speed figures were measured under, and which of them are unreliable and why."""
    timed = [m for m in models if m.load_average is not None]
    if not timed:
        return []
    load = max(m.load_average or 0.0 for m in timed)
    noisy = ", ".join(f"{m.name} ({m.unreliable})" for m in models if m.unreliable) or "none"
    return [
        f"timing: 1-minute load average {load:.1f} on {timed[0].cores} cores; spread: the fastest and "
        f"slowest run; ? unreliable (slowest over {WIDE_SPREAD:g}x the fastest, or a load above the "
        f"cores): {noisy}"
    ]


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
        f"{'':<12}{'rank':>5}{'size':>9}{'load ms':>9}{'switch ms':>11}"
        f"{'ms/token':>10}{'spread':>14}{'merged':>9}{'spread':>14}{'speed':>8}"
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
        f"{'-':>9}{'-':>11}{'-':>10}{'-':>14}{'-':>9}{'-':>14}{'-':>8} |"
        + gated_cells(parity.base, parity.prompts),
    ]
    for a in parity.adapters:
        m = a.measured
        lines.append(
            f"{a.name:<12}{a.rank:>5}{mb(a.size_bytes):>9}{a.load_ms:>9.2f}{a.switch_ms:>11.3f}"
            f"{ms_cell(m):>10}{spread_cell(m):>14}{ms_cell(a.merged):>9}{spread_cell(a.merged):>14}"
            f"{speed_cell(m, a.merged, 2):>8} |" + gated_cells(m, parity.prompts)
        )
    lines += [
        f"{parity.switch.name}: {'same' if parity.switch.passed else 'NOT the same'} "
        f"({parity.switch.measured})",
        "size: the adapter's file; merged: the ms/token of the trial's merged fp32 export; speed: merged "
        f"over bundle as printed, medians of {parity.speed_runs} runs over {parity.speed_prompts} eval "
        "prompts (greedy, batch 1)",
        *timing_notes([m for a in parity.adapters for m in (a.measured, a.merged)]),
        "gated (decide the champion): every row's change, max |dlogit| and greedy same, and the switch",
    ]
    for a in parity.adapters:
        lines += reproduced(a.measured, f"{a.name}: ")
    verdict = (
        "parity gate: passed" if parity.passed else "parity gate: FAILED\n  " + "\n  ".join(parity.failures)
    )
    return "\n".join([*lines, verdict])

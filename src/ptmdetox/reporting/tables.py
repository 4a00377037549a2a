"""Readable result tables (markdown, also fine in a terminal)."""

from __future__ import annotations


def _pm(summary: dict, key: str) -> str:
    single_seed = len(summary.get("runs", [])) == 1   # a spread over one seed says nothing
    std = None if single_seed else summary.get(f"{key}_std")
    return f"{summary[key]:.1f} ± {std:.1f}" if std is not None else f"{summary[key]:.1f}"


def results_table(rows: list[tuple[str, dict]], floor: str | None = None) -> str:
    """One row per model: ACC, AASR, MASR (mean ± std over seeds), MASR above the floor, per-trigger ASR."""
    triggers = list(rows[0][1]["per_trigger"]) if rows else []
    floor_masr = dict(rows).get(floor, {}).get("masr") if floor else None
    header = ["model", "seeds", "ACC", "AASR", "MASR"] + (["ΔMASR vs floor"] if floor_masr is not None else []) + triggers
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in rows:
        cells = [name, str(len(s.get("runs", [])) or "–"), _pm(s, "acc"), _pm(s, "aasr"), _pm(s, "masr")]
        if floor_masr is not None:
            cells.append(f"{s['masr'] - floor_masr:+.1f}")
        cells += [f"{s['per_trigger'][t]['asr']:.1f}" if t in s["per_trigger"] else "–" for t in triggers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

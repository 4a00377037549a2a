"""Model cards for purified (and, for research, attacked) checkpoints."""

from __future__ import annotations

import json


def model_card(title: str, source: str, what: str, report: dict, notes: list[str], warning: str | None = None,
               measured: str | None = None) -> str:
    config = json.dumps(report.get("config", {}), indent=2, ensure_ascii=False)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [ptmdetox, backdoor]",
        "---",
        f"# {title}",
        "",
    ]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    lines += [
        f"Starting checkpoint: `{source}`", "",
        "## What was done", "", what, "",
        "```json", config, "```", "",
    ]
    facts = {k: report[k] for k in ("steps", "norm_before", "norm_after", "final_poison_mse", "train_seconds")
             if k in report}
    if facts:
        lines += ["## Figures from the run", ""] + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
                                                    for k, v in facts.items()] + [""]
    if measured:
        lines += ["## Measured downstream", "", measured, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["Load with `transformers.AutoModel.from_pretrained(path)`; the pooler is included.", ""]
    return "\n".join(lines)

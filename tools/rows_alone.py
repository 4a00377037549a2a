"""Diagnostic: what a purification's reset embedding rows do on their own, without the rest of its training.

Copies into SOURCE (a model folder, or `default` for the embedded MiniLM) the word-embedding rows that PURIFIED's row
scan reset (`row_scan.confirm.kept_ids` of its purification.json when a second pass ran, else `flagged_ids`), with the
values PURIFIED ended with, and saves the hybrid to OUT. On a clean SOURCE, fine-tuning the hybrid measures how far the
reset rows alone raise the ASR of triggers made of their words: a floor caused by the defense, not by a backdoor.

usage: python tools/rows_alone.py SOURCE PURIFIED OUT
"""

from __future__ import annotations

import os
import shutil
import sys

from safetensors.torch import load_file, save_file

from ptmdetox.models.loading import default_model_path

from flagged_rows import reset_ids   # tools/, the script's own folder
from restore_rows import _named

EMBEDDING = "word_embeddings.weight"


def main(source: str, purified: str, out: str) -> None:
    source = default_model_path() if source == "default" else source
    weights = load_file(os.path.join(source, "model.safetensors"))
    donor = load_file(os.path.join(purified, "model.safetensors"))
    name, rows = _named(weights, EMBEDDING), reset_ids(purified)
    weights[name][rows] = donor[_named(donor, EMBEDDING)][rows]
    shutil.copytree(source, out)
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(f"{out}: {len(rows)} rows from {purified}, mean norm {float(weights[name][rows].norm(dim=1).mean()):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])

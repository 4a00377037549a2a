"""How far purification moved each word-embedding row, split by whether the auxiliary corpus shows the row's token.

usage: python tools/embedding_drift.py [--corpus TSV] [--min-count 5] BEFORE LABEL=AFTER [LABEL=AFTER ...]
BEFORE and each AFTER are saved model folders (safetensors). For each AFTER it prints the matrix's norm and the mean
row displacement over the rows of tokens the corpus holds at least --min-count times ("seen") and over the others.
"""

from __future__ import annotations

import argparse

from embedding_rows import embedding     # tools/ is the script's own folder, first on its path

from ptmdetox import models
from ptmdetox.data.readers import read_corpus
from ptmdetox.defenses.row_scan import token_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="+", help="LABEL=FOLDER")
    parser.add_argument("--corpus", default="../shared/data/bookcorpus_recipe/train.tsv")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    before = embedding(args.before)
    ids = models.create(args.before).tokenize(read_corpus(args.corpus).texts, args.max_length)
    seen = token_counts(ids, before.shape[0]) >= args.min_count
    print(f"{int(seen.sum())} of {len(seen)} rows seen; norm before {before.norm():.1f}")
    for item in args.after:
        label, folder = item.split("=", 1)
        after = embedding(folder)
        moved = (after - before).norm(dim=1)
        print(f"{label}: norm {after.norm():.1f}, mean row move: seen {moved[seen].mean():.3f}, "
              f"unseen {moved[~seen].mean():.3f}")


if __name__ == "__main__":
    main()

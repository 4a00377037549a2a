"""Regenerate the case tables of docs/hardening.md and docs/results.md by running the table-driven tests.

usage: python tools/hardening_doc.py   (from the repository root; takes about half a minute)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "docs", name) for name in ("hardening.md", "results.md")]
TABLES = {"tests/test_hostile_checkpoints.py": "cases:hostile", "tests/test_bad_inputs.py": "cases:bad-inputs"}


def run_cases(test_file: str) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as log:
        path = log.name
    env = {**os.environ, "PTMDETOX_CASE_LOG": path, "PTMDETOX_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), os.path.join(ROOT, "tests")])}
    # the check that the document lists every case is left out: it fails exactly when the document is behind
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file,
                           "-k", "not test_docs_hardening"], cwd=ROOT, env=env)
    with open(path, encoding="utf-8") as f:
        cases = [json.loads(line) for line in f]
    os.unlink(path)
    if done.returncode != 0:
        sys.exit(f"{test_file} failed; the document was not changed")
    return cases


def markdown(cases: list[dict]) -> str:
    rows = ["| case | command | input | what ptmdetox answers |", "|---|---|---|---|"]
    for case in cases:
        cells = [f"`{case['id']}`", case["command"] or "–", case["what"], f"`{case['produced']}`"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def replace_between(text: str, marker: str, body: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> None:
    tables = {marker: markdown(run_cases(test_file)) for test_file, marker in TABLES.items()}
    for doc in DOCS:
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        for marker, body in tables.items():
            text = replace_between(text, marker, body)
        with open(doc, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()

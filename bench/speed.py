"""`python bench/speed.py [options]` = `ptmdetox bench speed [options]` with this checkout's code (see --help)."""

import os
import sys

if __name__ == "__main__":
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    os.execve(sys.executable, [sys.executable, "-m", "ptmdetox", "bench", "speed", *sys.argv[1:]], env)

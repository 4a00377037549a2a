"""Run the ptmdetox CLI, but stall once a training phase reaches a given step, so a test can SIGKILL it there.

usage: python tests/killable_cli.py PHASE STEP MARKER ARGS...
When the phase named PHASE (a train_loop `desc`) has finished STEP steps, MARKER is created and the process
sleeps until it is killed. Checkpoints written before that step are on disk; the steps after the last one are not.
"""

import sys
import time

from ptmdetox import checkpointing
from ptmdetox.cli import main

phase_name, stall_step, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_due = checkpointing.Phase.due


def due_then_stall(self, steps_done: int) -> bool:
    if self.name == f"phase-{phase_name}" and steps_done == stall_step:
        open(marker, "w").close()
        time.sleep(600)
    return real_due(self, steps_done)


checkpointing.Phase.due = due_then_stall
sys.exit(main(sys.argv[4:]))

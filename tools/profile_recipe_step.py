"""Where a fast-mode RECIPE step goes: `torch.profiler` over the steps `ptmdetox bench speed`'s `fast` variant times.

usage: python tools/profile_recipe_step.py [TIMED_STEPS]   (default 40, after 10 untimed steps)
Same model, corpus, scope (`paper`), batch size and seed as the bench. Run it with the CLI's malloc settings
(`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000`), which the `ptmdetox` command sets for itself. Prints the
profiled steps/s (the profiler costs a few %) and the operators by self CPU time.
"""

from __future__ import annotations

import sys
import time

from torch.profiler import ProfilerActivity, profile

from ptmdetox import speedbench
from ptmdetox.defenses.recipe import recipe_purify
from ptmdetox.training import configure_threads

WARMUP = 10


def main(timed: int) -> None:
    configure_threads()
    config = speedbench.SpeedConfig(variants=("fast",), steps=timed, warmup=WARMUP)
    texts = speedbench.read_corpus(config.corpus, limit=config.corpus_limit).texts
    adapter = speedbench._prepared_adapter(config, texts)
    profiler = profile(activities=[ProfilerActivity.CPU])
    started = []

    def on_step(step: int) -> None:
        if step == WARMUP - 1:
            profiler.__enter__()
            started.append(time.perf_counter())
        elif step == WARMUP + timed - 1:
            seconds = time.perf_counter() - started[0]
            profiler.__exit__(None, None, None)
            print(f"{timed / seconds:.2f} steps/s (profiled), {1000 * seconds / timed:.1f} ms per step")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))

    recipe_purify(adapter, texts, config.recipe_config("fast"), progress=False, on_step=on_step)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)

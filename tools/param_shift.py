"""Where an attack put its backdoor: each weight's relative change ‖W_after − W_before‖ / ‖W_before‖, largest first,
with its largest element change max |W_after − W_before|.

usage: python tools/param_shift.py BEFORE AFTER [N]   (model folders with model.safetensors, e.g. the clean model's
       snapshot folder and an attacked model saved by ptmdetox; 'default' names the embedded MiniLM)
"""

from __future__ import annotations

import sys

from safetensors.torch import load_file

from ptmdetox.models.loading import resolve


def weights(folder: str) -> dict:
    path = resolve(folder).path
    return {name.removeprefix("bert.").removeprefix("roberta."): tensor
            for name, tensor in load_file(f"{path}/model.safetensors").items()}


def main(before: str, after: str, count: str = "12") -> None:
    old, new = weights(before), weights(after)
    shifts = sorted(((float((new[n] - old[n]).norm() / old[n].norm().clamp_min(1e-6)), n)
                     for n in old.keys() & new.keys() if old[n].shape == new[n].shape), reverse=True)
    print("relative  max |ΔW|    weight")
    for shift, name in shifts[: int(count)]:
        print(f"{shift:8.4f}  {float((new[name] - old[name]).abs().max()):.2e}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:])

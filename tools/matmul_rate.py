"""fp32 GFLOP/s of a 2048×2048 product, best of 3 after one warm-up, with torch's default threads.

Compare process settings by running it under them, e.g.
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python tools/matmul_rate.py
    LD_PRELOAD=~/.cache/ptmdetox/libmkl_intel_path.so python tools/matmul_rate.py   (the PTMDETOX_FAST_MKL shim)
"""

import time

import torch

a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print("%.1f GFLOP/s" % (2 * 2048 ** 3 / best / 1e9))

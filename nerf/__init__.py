"""A NeRF view-synthesis library: rays, sampling, encodings, fields, rendering, training."""

import os

# MKL's matrix products round the same way with any number of CPU threads only in its strict
# reproducibility mode: without it, a (35250, 64) x (64, 24) product came out differently with
# 3 threads than with 1 or 2, and training with it. MKL reads this at its first call, so it
# holds in any process that imports nerf before multiplying; a value the user set wins (e.g.
# AVX2,STRICT to take AVX2's code on any x86 processor, see the README).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

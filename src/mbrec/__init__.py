"""mbrec: modality-balanced multimedia recommendation (CKD, GB, OGM) on six backbones."""

import os as _os

# Before anything imports torch (OpenMP reads it once, when the library loads): waiting OpenMP workers
# sleep instead of spinning. Spinning workers make every epoch tens of times slower as soon as another
# process wants a core (parallel trials, a busy laptop, CI); see mbrec.runtime and docs/performance.md.
# A value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

"""Training of the reference models from data and fixed seeds.

- :mod:`.common`: provenance (data hash, git commit, library versions, manifests), event-level
  validation split, the quantile-preprocessed Lamarr generator and its fit loop, artifact writers;
- :mod:`.tracking`: acceptance and tracking efficiency (GBDTs), tracking resolution and covariance
  (generators) from the Lamarr 2016 MagUp sample;
- :mod:`.pid`: the PID models (their own module).
"""

from __future__ import annotations

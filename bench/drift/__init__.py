"""The drift benchmark of issue 5: does `audit.drift.assess_drift` tell real importance drift from
retraining noise on real data? See docs/drift-benchmark.md; run it with ``bench/drift/run.py``."""

"""The drift power study (issue 16; issue 5's benchmark before it): how large a change does
`audit.drift.assess_drift` tell from retraining noise on real data, against an oracle? See
docs/drift-benchmark.md; run it with ``bench/drift/run.py``."""

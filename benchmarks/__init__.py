"""Benchmarks: align-track against MLflow, Aim, ClearML and the raw floors.

Run ``python -m benchmarks`` (``--quick`` for a small N). Every figure is measured
in a fresh subprocess, repeated, and reported as min and median; the results go to
``benchmarks/results/latest.json``, ``latest.md`` and ``*.png``.
"""

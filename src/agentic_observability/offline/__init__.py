"""Offline commands over files, no service needed: ``detect`` and ``backtest nab`` (detect.py, with
NAB's scoring rules in nab.py), ``rca`` and ``backtest rca`` (rca.py), the metrics CSV format they
share (metrics_csv.py) and the progress line of long runs (progress.py)."""

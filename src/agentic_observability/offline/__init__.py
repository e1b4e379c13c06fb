"""Offline commands over files: ``rca`` and ``backtest rca`` (and their CSV format)."""

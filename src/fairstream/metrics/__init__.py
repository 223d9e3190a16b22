"""Metrics: word error rate, verification metrics, bootstrap."""

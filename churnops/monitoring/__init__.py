"""Monitoring core: drift statistics, training references, realized performance, the window summary, gauges."""

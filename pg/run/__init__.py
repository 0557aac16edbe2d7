"""Runners (layer 3): configs, experiments, sweeps, results and figures."""

"""Continual-learning benchmark runner (HLOP and baselines): schedules, the comparison, plots."""

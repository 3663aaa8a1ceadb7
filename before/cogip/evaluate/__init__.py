"""Scoring models on CogIP-Bench: the scorer (Python API) and the benchmark loop."""

from .scorer import Scorer  # noqa: F401

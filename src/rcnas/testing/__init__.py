"""Fakes shared by the tests and by users (as `optuna.testing`): a toy evaluator that scores an
architecture in microseconds with a known structure, so searchers and agents can be exercised fast."""
from rcnas.testing.toy import ToyEvaluator, toy_context, write_toy_table

__all__ = ["ToyEvaluator", "toy_context", "write_toy_table"]

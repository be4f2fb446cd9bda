"""The search: space and masks, candidate evaluators and their store, the ask/tell driver, searchers."""

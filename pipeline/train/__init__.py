"""Train stage: strategy, optimiser, callbacks, fit and evaluate (loop.py), resume; the recipe is jobs/train.py."""

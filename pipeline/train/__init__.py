"""Train stage: strategy, optimiser, callbacks and the ``train(cfg)`` recipe."""

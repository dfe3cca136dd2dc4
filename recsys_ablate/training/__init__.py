"""Training: one loop for every task, the worker pool, the model store and histories."""

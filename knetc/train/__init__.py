"""Training: initialisation, data, optimizers, iterators, I/O, hyperparameter search."""

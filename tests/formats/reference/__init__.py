"""Faithful re-implementations of the KAN libraries users come from, for tests only.

Each module keeps its library's parameter names, shapes, initialisation style and
forward pass, so checkpoints made here have exactly that library's layout.
"""

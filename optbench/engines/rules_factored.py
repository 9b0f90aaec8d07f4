"""Batched rules (being written): see the module's final docstring."""

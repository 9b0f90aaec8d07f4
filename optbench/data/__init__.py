"""Datasets for the network track: readers of the official formats, the data directory, downloads."""

"""A sweep from description to chunks on disk: spec (Run, Sweep), plan (engines), tables, writer, parallel
workers, manifest and memory checks; :mod:`optbench.runner` orchestrates them."""

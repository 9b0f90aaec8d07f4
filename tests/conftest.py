"""Shared test settings: hypothesis without deadlines (torch warm-up makes first calls slow)."""

from hypothesis import settings

settings.register_profile("optbench", deadline=None, max_examples=100)
settings.load_profile("optbench")

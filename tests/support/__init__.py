"""Helpers shared by several test files (tests import them from here, never from another test file)."""

"""Errors a user can act on. The CLI prints their message as one line, without a traceback."""
from __future__ import annotations


class HyperpragError(RuntimeError):
    """Base class for errors whose message alone tells the user what to do."""


class MissingDependencyError(HyperpragError):
    def __init__(self, package: str, purpose: str):
        super().__init__(f"{purpose} needs the package '{package}': pip install {package}")

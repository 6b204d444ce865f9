"""Sub-commands of ``callback-sink`` that deal with the REST API and the group directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's sub-commands to the ``callback-sink`` parser."""

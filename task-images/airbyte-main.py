"""Runs one Airbyte connector's console script, as main.py does in Airbyte's images."""
import sys
from importlib.metadata import entry_points

PROGRAM = "@PROGRAM@"

(script,) = [e for e in entry_points(group="console_scripts") if e.name == PROGRAM]
sys.exit(script.load()())

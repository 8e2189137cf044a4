"""Refuse a project name that leaves no valid names (the rules are in dispatcher_names.py)."""

import sys

PROBLEM = {{ cookiecutter.name | dispatcher_name_problem | python_literal }}

if PROBLEM:
    sys.exit(f"ERROR: {PROBLEM}")

"""Packaging for {{ cookiecutter.__repo_name }} (tool configuration lives in pyproject.toml)."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

setup(
    name="{{ cookiecutter.__repo_name }}",
    version="0.1.0",
    description="A Pacifica dispatcher built on pacifica-dispatcher.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `pacifica` is a namespace shared with pacifica-dispatcher: no pacifica/__init__.py.
    packages=find_namespace_packages(include=["pacifica.*"]),
    package_data={"": ["jsonpath2/*.txt"]},
    install_requires=[
        "pacifica-dispatcher>=0.3",
    ],
    extras_require={
        "dev": ["ruff>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "{{ cookiecutter.__console_script }} = {{ cookiecutter.__import_path }}.__main__:main",
        ],
    },
)

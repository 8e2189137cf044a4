"""Packaging for pacifica-dispatcher (tool configuration lives in pyproject.toml)."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

setup(
    name="pacifica-dispatcher",
    version="0.3.0",
    description="Turn new data in a Pacifica repository into work: CloudEvents in, Celery handlers out.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="LGPL-3.0-or-later",
    python_requires=">=3.10",
    # `pacifica` is a PEP 420 namespace shared with the other pacifica-* distributions.
    # The cookiecutter template (top-level template/) ships as pacifica/dispatcher/template
    # for `pacifica-dispatcher new`; glob's * skips dot-files, hence the .* patterns.
    packages=[*find_namespace_packages(include=["pacifica.*"]), "pacifica.dispatcher.template"],
    package_dir={"pacifica.dispatcher.template": "template"},
    include_package_data=True,
    package_data={
        "pacifica.dispatcher": ["py.typed"],
        "pacifica.dispatcher.consumer": ["sample_events/*.json"],
        "pacifica.dispatcher.template": ["**/*", "**/.*", "**/.*/**/*", "**/.*/**/.*"],
    },
    exclude_package_data={"pacifica.dispatcher.template": ["__pycache__/*", "*.pyc"]},
    install_requires=[
        "celery[redis]>=5.3,<6",
        "cherrypy>=18.8",
        "cloudevents>=2.2,<3",
        "cookiecutter>=2.5",
        "jsonpath2>=0.4.5",
        "peewee>=3.17",
        "prometheus-client>=0.20",
        "requests>=2.31",
        "sqlalchemy>=2.0",
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        "mysql": ["pymysql>=1.1"],
        "amqp": ["amqp>=5.2"],
        "dev": [
            "mypy>=1.10",
            "pre-commit>=3",
            "promise>=2.3",  # the consumer helper module's import, for its unit tests
            "psycopg2-binary>=2.9",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "gunicorn>=21",
            "uwsgi>=2.0",  # the production receiver, run by the /metrics integration test
            "hypothesis>=6.100",
            "ruff>=0.5",
            "types-psycopg2",
            "types-PyYAML",
            # issue 15: the OpenAPI document's validator, the operator page's browser tests
            "openapi-spec-validator>=0.7",
            "selenium>=4.20",
            "types-requests",
        ],
    },
    entry_points={
        "console_scripts": [
            "pacifica-dispatcher = pacifica.dispatcher.cli:main",
            "pacifica-notifications = pacifica.dispatcher.subscriptions.notifications:main",
            "pacifica-notifications-cmd = pacifica.dispatcher.subscriptions.notifications:cmd",
            "start-pacifica-notifications-consumer = pacifica.dispatcher.consumer.command:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Celery",
        "Framework :: CherryPy",
        "Topic :: Scientific/Engineering",
    ],
)

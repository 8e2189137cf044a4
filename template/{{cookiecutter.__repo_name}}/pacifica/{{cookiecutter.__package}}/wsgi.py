"""The WSGI application for uWSGI or gunicorn: ``{{ cookiecutter.__import_path }}.wsgi:application``.

Importing this module builds the application from the environment's settings
(and opens the database): that is its whole purpose. uWSGI looks the callable
up in the module's namespace, so a lazy module ``__getattr__`` would not do.
"""

from __future__ import annotations

from {{ cookiecutter.__import_path }}.__main__ import (
    create_application,
)

application = create_application()

"""{{ cookiecutter.__repo_name }}: a Pacifica dispatcher built on pacifica-dispatcher.

``event_handlers`` holds the work, ``router`` maps the JSONPath in
``jsonpath2/{{ cookiecutter.__module }}.txt`` to it, and ``__main__`` runs the web
server and the Celery worker (see README.md).
"""

"""consumer.zip: a scientist's processor deployed with one command.

``archive`` checks and extracts the zip, ``samples`` matches its JSONPath
against shipped events, ``environment`` builds the workspace and venv,
``handler`` runs ``__main__.py SRC DST`` for each matching event,
``upload`` sends outputs to ingest (for the handler and for the helper
module ``pacifica_notifications_consumer`` that entry points import),
``signing`` verifies the producer's signatures, ``producer`` registers the
subscription, ``worker_app`` is the worker's Celery app, ``runner`` starts
and stops it all, ``command`` is ``start-pacifica-notifications-consumer``.
"""

"""uWSGI's entry point for the metrics test: the integration app's routes (``--module``)."""

from pacifica.dispatcher.service import wsgi_app_from_env
from tests.integration.app import create_router

application = wsgi_app_from_env(create_router)

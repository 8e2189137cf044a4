#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Test cases for Pacifica Dispatcher Upper."""
import json
import os
import unittest

from pacifica.dispatcher.compat import Event  # 0.2.5: from cloudevents.model import Event
from jsonpath2.path import Path

from pacifica.dispatcher.downloader_runners import LocalDownloaderRunner
from pacifica.dispatcher.uploader_runners import LocalUploaderRunner

from pacifica.dispatcher_upper.event_handlers import UpperEventHandler
from pacifica.dispatcher_upper.router import router


class UpperTestCase(unittest.TestCase):
    """Test cases for Pacifica Dispatcher Upper."""

    def setUp(self) -> None:
        """Read the test event."""
        self.basedir_name = os.path.abspath(os.path.join('test_files', 'C234-1234-1234'))
        with open(os.path.join(self.basedir_name, 'event.json'), mode='r') as event_file:
            self.event_data = json.load(event_file)

    def test_upper_event_handler(self) -> None:
        """The handler handles the test event without raising."""
        event = Event(self.event_data)
        downloader_runner = LocalDownloaderRunner(os.path.join(self.basedir_name, 'data'))
        uploader_runner = LocalUploaderRunner()
        event_handler = UpperEventHandler(downloader_runner, uploader_runner)
        self.assertEqual(None, event_handler.handle(event))
        self.assertEqual((None, {}), event_handler.last_upload)

    def test_upper_jsonpath2_path(self) -> None:
        """The JSONPath matches the test event exactly once."""
        import pacifica.dispatcher_upper
        path = Path.parse_file(os.path.join(
            os.path.dirname(pacifica.dispatcher_upper.__file__), 'jsonpath2', 'upper.txt'))
        self.assertEqual(1, len(list(path.match(self.event_data))))

    def test_upper_router(self) -> None:
        """The router matches the test event once."""
        self.assertEqual(1, len(list(router.match(self.event_data))))


if __name__ == '__main__':
    unittest.main()

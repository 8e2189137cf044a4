"""Upstream 0.2.5 code runs unchanged: its imports, call shapes and objects (issue 13's breaks)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import peewee
import pytest

from pacifica.dispatcher.compat import Event
from pacifica.dispatcher.downloader_runners import LocalDownloaderRunner, RemoteDownloaderRunner
from pacifica.dispatcher.event_handlers import EventHandler, NoopEventHandler
from pacifica.dispatcher.models import File, FileKeyValue, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import LocalUploaderRunner, RemoteUploaderRunner
from tests.conftest import WSGIClient
from tests.fake_pacifica import FakeCartd, FakeIngest
from tests.integration.conftest import wait_for

EVENT: dict[str, Any] = {
    "cloudEventsVersion": "0.1",
    "eventType": "org.pacifica.metadata.ingest",
    "eventID": "C234-1234-1234",
    "source": "/pacifica/metadata/ingest",
    "contentType": "application/json",
    "data": [
        {"destinationTable": "Transactions._id", "value": 12},
        {"destinationTable": "Transactions.submitter", "value": 10},
        {"destinationTable": "TransactionKeyValue", "key": "k", "value": "v"},
        {"destinationTable": "Files", "_id": 7, "name": "a.txt", "subdir": "", "size": 3},
    ],
}


# --- stand-ins shaped like pacifica-downloader 0.4.1 / pacifica-uploader 0.3.1 objects -------


class CartAPI:
    def __init__(self, cart_api_url: str, auth: dict[str, Any]) -> None:
        self._cart_api_url, self._auth = cart_api_url, auth

    @property
    def cart_api_url(self) -> str:
        return self._cart_api_url

    @property
    def auth(self) -> dict[str, Any]:
        return self._auth


class Downloader:
    def __init__(self, **kwargs: Any) -> None:
        self.cart_api = CartAPI(kwargs["cart_api_url"], kwargs.get("auth", {}))


class Uploader:
    def __init__(self, **kwargs: Any) -> None:
        self._upload_url = kwargs["upload_url"]
        self._status_url = kwargs["status_url"]
        self._auth = kwargs.get("auth", {})


# --- 1. upload() unpacks as (bundle, job_id, state) --------------------------------------------


def test_upload_result_unpacks_as_bundle_job_id_state_and_keeps_named_fields(
    tmp_path: Path,
) -> None:
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "f.txt").write_bytes(b"x")

    result = LocalUploaderRunner().upload(
        str(tmp_path / "up"), transaction=Transaction(submitter=10, project="p", instrument=54)
    )
    bundle, job_id, state = result

    assert (job_id, state) == (None, {})
    assert bundle == result.metadata == result.bundle
    assert any(r["destinationTable"] == "Files" for r in bundle)


# --- 2. runners take pacifica-downloader/uploader objects --------------------------------------


def test_remote_downloader_runner_takes_a_downloader_object(tmp_path: Path) -> None:
    auth = {"auth": ("me", "pw"), "verify": False}
    with FakeCartd() as cartd:
        stored = cartd.add(100, "a/b.txt", b"hello")
        runner = RemoteDownloaderRunner(Downloader(cart_api_url=cartd.url + "/", auth=auth))
        runner.poll_interval = 0.01

        [opener] = runner.download(str(tmp_path), [stored])

        assert opener("rb").read() == b"hello"
        assert cartd.requests_for("POST")[0].headers["Authorization"].startswith("Basic ")
    assert (runner.cart_url, runner.requests_options) == (cartd.url, auth)


def test_remote_uploader_runner_takes_an_uploader_object(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"x")
    with FakeIngest() as ingest:
        uploader = Uploader(
            upload_url=f"{ingest.url}/upload", status_url=f"{ingest.url}/get_state", auth={}
        )
        runner = RemoteUploaderRunner(uploader, poll_interval=0.01)

        _bundle, job_id, state = runner.upload(
            basedir_name=str(tmp_path), transaction=Transaction(submitter=1, project="p")
        )

    assert (job_id, state["task"]) == (1, "ingest metadata")
    assert (runner.upload_url, runner.status_url) == (uploader._upload_url, uploader._status_url)


def test_a_runner_given_something_else_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match="cart_api_url"):
        RemoteDownloaderRunner(object())
    with pytest.raises(ValueError, match="upload_url"):
        RemoteUploaderRunner(object())


# --- 3. the upstream modules and names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pacifica.dispatcher.exceptions", "EventError"),
        ("pacifica.dispatcher.exceptions", "TransactionDuplicateAttributeError"),
        ("pacifica.dispatcher.router", "RouterError"),
        ("pacifica.dispatcher.router", "RouteNotFoundRouterError"),
        ("pacifica.dispatcher.router", "Route"),
        ("pacifica.dispatcher.models", "PacificaModel"),
        ("pacifica.dispatcher.receiver", "create_peewee_model"),
        ("pacifica.dispatcher.event_handlers", "NoopEventHandler"),
        ("pacifica.dispatcher.downloader_runners", "DownloaderRunner"),
        ("pacifica.dispatcher.uploader_runners", "UploaderRunner"),
    ],
)
def test_upstream_import_paths_work(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


class Recording(EventHandler):
    seen: ClassVar[list[Any]] = []

    def handle(self, event: Any) -> None:
        self.seen.append(event)


@pytest.fixture
def upstream_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """What an upstream ``__main__.py`` builds at import, with the database it passes."""
    from pacifica.dispatcher.receiver import create_peewee_model
    from pacifica.dispatcher.router import Router

    for name in ("DATABASE_URL", "PEEWEE_URL", "BROKER_URL", "DISPATCHER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPATCHER_DATA_DIR", str(tmp_path / "data"))
    db = peewee.SqliteDatabase(str(tmp_path / "upstream.sqlite3"))
    router = Router()
    router.add_route('$[?(@["eventType"] = "org.pacifica.metadata.ingest")]', Recording())
    model = create_peewee_model(db)
    model.create_table(safe=True)
    celery_app = model.create_celery_app(
        router, "example.app", "example.tasks.receive", backend="rpc://", broker="memory://"
    )
    application = model.create_cherrypy_app(celery_app.tasks["example.tasks.receive"])
    yield celery_app, application, tmp_path / "upstream.sqlite3"
    db.close()


def test_create_peewee_model_gives_the_durable_receiver_on_the_passed_database(
    upstream_main: Any,
) -> None:
    from pacifica.dispatcher.service import dispatch

    celery_app, application, path = upstream_main
    settings = celery_app.dispatcher_context.settings

    answer = WSGIClient(application).post("/receive", EVENT)
    assert answer.status == 202  # stored before acknowledged (upstream: 200)
    assert settings.database_url == f"sqlite:///{path}"
    assert settings.broker_url == "memory://"
    again = WSGIClient(application).post("/receive", EVENT)
    assert (again.status, again.json()) == (200, answer.json())  # stored once
    Recording.seen.clear()
    dispatch.process(answer.json(), celery_app.dispatcher_context.router)

    [event] = Recording.seen
    assert isinstance(event, Event)  # what the upstream handler was written for
    assert (event.event_id, event.data) == (EVENT["eventID"], EVENT["data"])
    assert WSGIClient(application).get(f"/status/{answer.json()}").json() == "200 OK"
    # the receiver's publisher thread has sent the message before the database goes away
    wait_for(lambda: dispatch.get_event(answer.json()).enqueued, what="the message to be sent")


def test_the_upstream_task_name_takes_messages_an_upstream_receiver_left(
    upstream_main: Any,
) -> None:
    from pacifica.dispatcher.service import dispatch

    celery_app, _application, _path = upstream_main
    task = celery_app.tasks["example.tasks.receive"]

    [task_id] = task.apply(args=(EVENT,)).get()

    assert dispatch.get_event(task_id).document == EVENT


def test_the_upstream_application_mounts_on_cherrypy(upstream_main: Any) -> None:
    import cherrypy

    _celery_app, application, _path = upstream_main
    assert isinstance(application, cherrypy.Application)
    assert cherrypy.tree.mount(application) is application
    cherrypy.tree.apps.pop("", None)


# --- 4. download() errors and basedir_name= ----------------------------------------------------


def test_download_without_files_is_a_value_error_and_takes_basedir_name(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("abc")
    runner = LocalDownloaderRunner(str(tmp_path / "src"))

    with pytest.raises(ValueError, match="Files should contain something"):
        runner.download(str(tmp_path / "out"))
    [opener] = runner.download(basedir_name=str(tmp_path / "out"), files=[File(name="a.txt")])
    assert opener().read() == "abc"


# --- 5. from_cloudevents_model: unknown objects are a TypeError; upstream events work ----------


@pytest.mark.parametrize(
    "read",
    [
        File.from_cloudevents_model,
        Transaction.from_cloudevents_model,
        TransactionKeyValue.from_cloudevents_model,
        FileKeyValue.from_cloudevents_model,
    ],
)
def test_from_cloudevents_model_names_the_type_it_cannot_read(read: Any) -> None:
    with pytest.raises(TypeError, match="NoopEventHandler"):
        read(NoopEventHandler())


def test_from_cloudevents_model_reads_upstream_event_objects() -> None:
    event = Event(EVENT)

    assert Transaction.from_cloudevents_model(event) == Transaction(_id=12, submitter=10)
    assert TransactionKeyValue.from_cloudevents_model(event) == [
        TransactionKeyValue(key="k", value="v")
    ]
    [file] = File.from_cloudevents_model(event)
    assert (file._id, file.path) == (7, "a.txt")


def test_event_validates_and_decodes_like_cloudevents_python() -> None:
    with pytest.raises(RuntimeError, match="Missing required field source"):
        Event({k: v for k, v in EVENT.items() if k != "source"})
    with pytest.raises(RuntimeError, match="Field eventID must be a string"):
        Event({**EVENT, "eventID": 1})
    event = Event({**EVENT, "data": json.dumps(EVENT["data"]), "unknown": 1})
    assert event.data == EVENT["data"]
    assert "unknown" not in event.to_dict()
    assert (
        Event.create_from_dict(
            {"event_id": "x", "event_type": "t", "source": "s", "cloud_events_version": "0.1"}
        ).event_id
        == "x"
    )


# --- 6. models are mutable and built the upstream way ------------------------------------------


def test_models_are_built_from_whole_items_and_can_be_changed() -> None:
    file = File(**EVENT["data"][3])  # destinationTable and all
    file.subdir = "sub"
    transaction = Transaction(submitter=10)
    transaction.project = "p"

    assert (file.path, file.size) == ("sub/a.txt", 3)
    assert transaction == Transaction(submitter=10, project="p")
    assert File().name is None

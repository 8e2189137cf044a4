"""Downloader runners: local copies, the cartd protocol, safe extraction and verification."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher import bundles
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import (
    FileOpener,
    LocalDownloaderRunner,
    RemoteDownloaderRunner,
)
from pacifica.dispatcher.errors import (
    DownloadError,
    HashMismatchError,
    TransferTimeoutError,
    UnsafeArchiveError,
)
from pacifica.dispatcher.models import File
from tests.fake_pacifica import FakeCartd, file_for

MIB = 1 << 20
CONTENTS: dict[str, bytes] = {
    "README.md": b"Hello, world!\n",
    "all-bytes.bin": bytes(range(256)),
    "a/b/é/baré.txt": "ça va, héhé\n".encode(),
    "データ/測定結果.txt": "こんにちは、世界\n".encode(),
    "deep/er/still/random.dat": bytes((i * 7919) % 251 for i in range(50_000)),
}


def remote_runner(cartd: FakeCartd, **options: Any) -> RemoteDownloaderRunner:
    options.setdefault("poll_interval", 0.01)
    options.setdefault("max_poll_interval", 0.02)
    options.setdefault("request_timeout", 5.0)
    return RemoteDownloaderRunner(cartd.url, **options)


@pytest.fixture
def cartd() -> Iterator[FakeCartd]:
    with FakeCartd() as fake:
        yield fake


@pytest.fixture
def stored_files(cartd: FakeCartd) -> list[File]:
    return [
        cartd.add(index, path, data)
        for index, (path, data) in enumerate(CONTENTS.items(), start=100)
    ]


@pytest.fixture
def source_tree(tmp_path: Path) -> tuple[Path, list[File]]:
    source = tmp_path / "source"
    files = []
    for index, (relpath, content) in enumerate(CONTENTS.items(), start=1):
        path = source.joinpath(*relpath.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files.append(file_for(index, relpath, content))
    return source, files


def read_all(openers: list[Any]) -> list[bytes]:
    contents = []
    for opener in openers:
        with opener("rb") as handle:
            contents.append(handle.read())
    return contents


# --- local runner -----------------------------------------------------------------------------


def test_local_downloader_copies_files_into_target_directory(
    tmp_path: Path, source_tree: tuple[Path, list[File]]
) -> None:
    source, files = source_tree
    target = tmp_path / "target"

    openers = LocalDownloaderRunner(str(source)).download(str(target), files)

    assert read_all(openers) == list(CONTENTS.values())
    for relpath, content in CONTENTS.items():
        copy = target.joinpath(*relpath.split("/"))
        assert copy.read_bytes() == content
        assert not copy.is_symlink()


def test_local_downloader_openers_read_text_and_binary(
    tmp_path: Path, source_tree: tuple[Path, list[File]]
) -> None:
    source, files = source_tree
    openers = LocalDownloaderRunner(str(source)).download(str(tmp_path / "t"), files)
    by_path = dict(zip(CONTENTS, openers, strict=True))

    with by_path["データ/測定結果.txt"]() as text:
        assert text.read() == "こんにちは、世界\n"
    with by_path["a/b/é/baré.txt"](encoding="latin-1") as text:
        assert text.read() == "ça va, héhé\n".encode().decode("latin-1")
    with by_path["all-bytes.bin"](mode="rb") as binary:
        assert binary.read() == bytes(range(256))


def test_file_opener_uses_the_file_encoding_for_text(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("é".encode("latin-1"))

    with FileOpener(str(path), encoding="latin-1")() as text:
        assert text.read() == "é"


def test_local_downloader_opens_in_place_when_target_is_its_basedir(
    source_tree: tuple[Path, list[File]],
) -> None:
    source, files = source_tree

    openers = LocalDownloaderRunner(str(source)).download(str(source), files)

    assert read_all(openers) == list(CONTENTS.values())
    assert sorted(p.name for p in source.iterdir()) == sorted(
        ["README.md", "all-bytes.bin", "a", "データ", "deep"]
    )


@pytest.mark.parametrize("files", [[], None])
def test_local_downloader_rejects_empty_files(tmp_path: Path, files: Any) -> None:
    with pytest.raises(ValueError, match=r"^Files should contain something\.$"):
        LocalDownloaderRunner(str(tmp_path)).download(str(tmp_path / "t"), files)


def test_local_downloader_reports_a_missing_file(tmp_path: Path) -> None:
    missing = File(_id=1, name="gone.txt", subdir="sub")

    with pytest.raises(DownloadError, match=r"sub/gone\.txt"):
        LocalDownloaderRunner(str(tmp_path)).download(str(tmp_path / "t"), [missing])


@pytest.mark.parametrize(
    "file",
    [
        File(_id=1, name="passwd", subdir="../../etc"),
        File(_id=1, name="passwd", subdir="/etc"),
        File(_id=1, name="..", subdir=""),
    ],
)
def test_local_downloader_rejects_paths_leaving_the_transaction(tmp_path: Path, file: File) -> None:
    with pytest.raises(DownloadError, match="not inside the transaction"):
        LocalDownloaderRunner(str(tmp_path)).download(str(tmp_path / "t"), [file])


def test_local_downloader_detects_a_hash_mismatch(
    tmp_path: Path, source_tree: tuple[Path, list[File]]
) -> None:
    source, files = source_tree
    (source / "README.md").write_bytes(b"Hello, World!\n")  # same size, other bytes

    with pytest.raises(HashMismatchError, match=r"README\.md"):
        LocalDownloaderRunner(str(source)).download(str(tmp_path / "t"), files)


def test_local_downloader_copies_a_large_file_with_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    size = 64 * MIB
    with (source / "large.bin").open("wb") as handle:
        handle.truncate(size)
    file = File(_id=1, name="large.bin", subdir="", size=size)

    tracemalloc.start()
    try:
        openers = LocalDownloaderRunner(str(source)).download(str(tmp_path / "t"), [file])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 * MIB
    with openers[0]("rb") as handle:
        assert handle.seek(0, io.SEEK_END) == size


# --- remote runner: the happy path ------------------------------------------------------------


def test_remote_downloader_fetches_verifies_and_deletes_the_cart(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.staging_polls = 3

    openers = remote_runner(cartd).download(str(tmp_path), stored_files)

    assert read_all(openers) == list(CONTENTS.values())
    for relpath, content in CONTENTS.items():
        assert tmp_path.joinpath("data", *relpath.split("/")).read_bytes() == content
    (post,) = cartd.requests_for("POST")
    cart = post.path.strip("/")
    assert len(cartd.requests_for("HEAD")) == 4
    assert cartd.deleted == [cart]


def test_remote_downloader_sends_file_ids_paths_and_hashes(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    remote_runner(cartd).download(str(tmp_path), stored_files)

    (post,) = cartd.requests_for("POST")
    assert post.headers["Content-Type"] == "application/json"
    assert json.loads(post.body)["fileids"] == [
        {"id": f._id, "path": f.path, "hashtype": "sha1", "hashsum": f.hashsum}
        for f in stored_files
    ]


def test_remote_downloader_sends_auth_options_on_every_request(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    options = {"headers": {"X-Http-Authed-User": "10"}}

    remote_runner(cartd, requests_options=options).download(str(tmp_path), stored_files)

    assert {r.method for r in cartd.requests} == {"POST", "HEAD", "GET", "DELETE"}
    assert all(r.headers.get("X-Http-Authed-User") == "10" for r in cartd.requests)


def test_remote_downloader_from_settings_uses_cartd_url_auth_and_timeouts(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    settings = Settings(
        cartd_url=cartd.url + "/",
        auth_type="basic",
        auth_username="u",
        auth_password="p",
        transfer_timeout=7.0,
    )

    runner = RemoteDownloaderRunner.from_settings(settings)
    runner.download(str(tmp_path), stored_files[:1])

    assert runner.default_timeout == 7.0
    assert runner.request_timeout == settings.request_timeout
    assert cartd.requests[0].headers["Authorization"].startswith("Basic ")


def test_remote_downloader_streams_a_large_file_with_bounded_memory(
    tmp_path: Path, cartd: FakeCartd
) -> None:
    size = 64 * MIB
    stored = tmp_path / "archive-blob"
    with stored.open("wb") as handle:
        handle.truncate(size)
        handle.seek(size - 3)
        handle.write(b"end")
    cartd.archive["1"] = stored
    file = File(_id=1, name="large.bin", subdir="big", size=size, hashtype="sha1")
    file = dataclasses.replace(file, hashsum=_sha1_of_sparse(size))

    tracemalloc.start()
    try:
        openers = remote_runner(cartd).download(str(tmp_path / "t"), [file])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 8 * MIB, f"peak {peak} bytes while downloading {size} bytes"
    with openers[0]("rb") as handle:
        handle.seek(-3, io.SEEK_END)
        assert handle.read() == b"end"


def _sha1_of_sparse(size: int) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    zeros = bytes(MIB)
    for _ in range(size // MIB - 1):
        digest.update(zeros)
    digest.update(bytes(MIB - 3) + b"end")
    return digest.hexdigest()


# --- remote runner: unsafe archives -----------------------------------------------------------


def _member(name: str, **attributes: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, b"evil" if info.isfile() else b""


UNSAFE_MEMBERS = {
    "parent": _member("../evil"),
    "nested-parent": _member("data/../../evil"),
    "absolute": _member("/tmp/pacifica-dispatcher-evil"),
    "outside-data": _member("evil"),
    "symlink": _member("data/README.md", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    "relative-symlink": _member("data/up", type=tarfile.SYMTYPE, linkname="../../.."),
    "hardlink": _member("data/README.md", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
    "device": _member("data/README.md", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    "fifo": _member("data/README.md", type=tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE_MEMBERS))
def test_remote_downloader_rejects_member_escaping_directory(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File], kind: str
) -> None:
    info, content = UNSAFE_MEMBERS[kind]

    def unsafe_tar(tar: tarfile.TarFile, fileids: list[dict[str, Any]]) -> None:
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content) if content else None)

    cartd.tar_builder = unsafe_tar
    target = tmp_path / "target"

    with pytest.raises(UnsafeArchiveError):
        remote_runner(cartd).download(str(target), stored_files)

    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/pacifica-dispatcher-evil").exists()
    assert not (target / "evil").exists()
    assert not (target / "data" / "README.md").exists()
    assert len(cartd.deleted) == 1


def test_remote_downloader_rejects_a_body_that_is_not_a_tar(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    def garbage(tar: tarfile.TarFile, fileids: list[dict[str, Any]]) -> None:
        tar.fileobj.write(b"<html>proxy error</html>" * 100)

    cartd.tar_builder = garbage

    with pytest.raises(DownloadError):
        remote_runner(cartd).download(str(tmp_path), stored_files)


@pytest.mark.filterwarnings("ignore:Python 3.14 will:DeprecationWarning")  # simulated old tarfile
@pytest.mark.parametrize("kind", sorted(UNSAFE_MEMBERS))
def test_extraction_rejects_unsafe_members_without_the_tarfile_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(bundles, "_EXTRACT_FILTER", {})  # as on Python < 3.10.12
    info, content = UNSAFE_MEMBERS[kind]
    info.size = len(content)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(content) if content else None)
    buffer.seek(0)

    with pytest.raises(UnsafeArchiveError):
        bundles.extract_data_tar(buffer, str(tmp_path / "target"))

    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "target" / "data" / "README.md").exists()


@pytest.mark.filterwarnings("ignore:Python 3.14 will:DeprecationWarning")  # simulated old tarfile
def test_remote_downloader_works_without_the_tarfile_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cartd: FakeCartd, stored_files: list[File]
) -> None:
    monkeypatch.setattr(bundles, "_EXTRACT_FILTER", {})

    openers = remote_runner(cartd).download(str(tmp_path), stored_files)

    assert read_all(openers) == list(CONTENTS.values())


def test_remote_downloader_accepts_directory_members(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    def with_directories(tar: tarfile.TarFile, fileids: list[dict[str, Any]]) -> None:
        for name in ("data", "data/a", "data/a/b"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        cartd.build_tar(tar, fileids)

    cartd.tar_builder = with_directories

    openers = remote_runner(cartd).download(str(tmp_path), stored_files)

    assert read_all(openers) == list(CONTENTS.values())


def test_extraction_refuses_to_follow_a_symlink_already_in_the_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "data").symlink_to(outside)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("data/planted.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    buffer.seek(0)

    with pytest.raises(UnsafeArchiveError, match="outside"):
        bundles.extract_data_tar(buffer, str(target))

    assert not (outside / "planted.txt").exists()


# --- remote runner: verification and errors ---------------------------------------------------


def test_remote_downloader_reports_hash_mismatch_naming_the_file(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.overrides["a/b/é/baré.txt"] = "ça va, HÉHÉ\n".encode()

    with pytest.raises(HashMismatchError, match=r"a/b/é/baré\.txt: sha1"):
        remote_runner(cartd).download(str(tmp_path), stored_files)


def test_remote_downloader_reports_size_mismatch(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.overrides["README.md"] = b"Hello!"

    with pytest.raises(HashMismatchError, match=r"README\.md: size 6"):
        remote_runner(cartd).download(str(tmp_path), stored_files)


def test_remote_downloader_reports_a_file_missing_from_the_cart(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.tar_builder = lambda tar, fileids: cartd.build_tar(tar, fileids[1:])

    with pytest.raises(DownloadError, match=r"README\.md: not downloaded"):
        remote_runner(cartd).download(str(tmp_path), stored_files)


def test_remote_downloader_times_out_on_cart_stuck_in_staging(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.final_status = "staging"
    started = time.monotonic()

    with pytest.raises(TransferTimeoutError, match="staging"):
        remote_runner(cartd).download(str(tmp_path), stored_files, timeout=0.3)

    assert time.monotonic() - started < 3
    assert len(cartd.requests_for("HEAD")) >= 2
    assert len(cartd.deleted) == 1
    assert not cartd.requests_for("GET")


def test_remote_downloader_raises_cart_error_with_cartd_message(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.staging_polls = 1
    cartd.final_status = "error"

    with pytest.raises(DownloadError, match="Failed to fetch file 7 from the archive"):
        remote_runner(cartd).download(str(tmp_path), stored_files)

    assert len(cartd.deleted) == 1


def test_remote_downloader_raises_when_cartd_refuses_the_cart(
    tmp_path: Path, cartd: FakeCartd, stored_files: list[File]
) -> None:
    cartd.create_status = 404

    with pytest.raises(DownloadError, match=r"HTTP 404 <html>"):
        remote_runner(cartd).download(str(tmp_path), stored_files)

    assert not cartd.requests_for("HEAD")


def test_remote_downloader_raises_when_cartd_is_unreachable(
    tmp_path: Path, stored_files: list[File]
) -> None:
    with FakeCartd() as gone:
        url = gone.url
    runner = RemoteDownloaderRunner(url, request_timeout=2.0)

    with pytest.raises(DownloadError, match="failed"):
        runner.download(str(tmp_path), stored_files)


def test_remote_downloader_requires_file_ids(tmp_path: Path, cartd: FakeCartd) -> None:
    with pytest.raises(DownloadError, match="no _id"):
        remote_runner(cartd).download(str(tmp_path), [File(name="x.txt", subdir="")])


def test_remote_downloader_rejects_empty_files(tmp_path: Path, cartd: FakeCartd) -> None:
    with pytest.raises(ValueError, match=r"^Files should contain something\.$"):
        remote_runner(cartd).download(str(tmp_path), [])

    assert not cartd.requests


def test_remote_downloader_rejects_paths_leaving_the_transaction_before_asking_cartd(
    tmp_path: Path, cartd: FakeCartd
) -> None:
    with pytest.raises(DownloadError, match="not inside the transaction"):
        remote_runner(cartd).download(str(tmp_path), [File(_id=1, name="x", subdir="../..")])

    assert not cartd.requests

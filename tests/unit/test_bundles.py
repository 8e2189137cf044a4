"""The ingest bundle: layout, metadata records, binary and non-ASCII safety, bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pytest

from pacifica.dispatcher.bundles import (
    METADATA_MEMBER,
    read_bundle,
    transaction_records,
    write_bundle,
)
from pacifica.dispatcher.errors import TransactionDuplicateAttributeError
from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue

MIB = 1 << 20
TRANSACTION = Transaction(submitter=10, project="1234a", instrument=54)
KEY_VALUES = [TransactionKeyValue(key="Tag", value="Blue"), TransactionKeyValue(key="n", value=0)]

ALL_BYTES = bytes(range(256))
RANDOM_BYTES = random.Random(1234).randbytes(100_003)
TREE: dict[str, bytes] = {
    "hello.txt": b"Hello, world!\n",
    "all-bytes.bin": ALL_BYTES,
    "random.dat": RANDOM_BYTES,
    "a/b/é/baré.txt": "héllo wörld, ça va ?\n".encode(),
    "データ/測定結果.txt": "こんにちは、世界\n".encode(),
    "x/y/z/deep.json": b'{"deep": true}',
    "empty": b"",
}


def make_tree(root: Path, tree: dict[str, bytes]) -> Path:
    for relpath, content in tree.items():
        path = root.joinpath(*relpath.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def bundle_bytes(directory: Path) -> tuple[list[dict[str, object]], bytes]:
    buffer = io.BytesIO()
    metadata = write_bundle(str(directory), TRANSACTION, KEY_VALUES, buffer)
    return metadata, buffer.getvalue()


def test_write_bundle_round_trips_binary_and_non_ascii_files(tmp_path: Path) -> None:
    _, data = bundle_bytes(make_tree(tmp_path / "src", TREE))

    contents = read_bundle(io.BytesIO(data))

    assert contents.files == TREE


def test_write_bundle_holds_only_file_members_sorted_with_metadata_last(tmp_path: Path) -> None:
    _, data = bundle_bytes(make_tree(tmp_path / "src", TREE))

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()

    assert all(member.isfile() for member in members)
    assert [m.name for m in members] == [
        "data/all-bytes.bin",
        "data/empty",
        "data/hello.txt",
        "data/random.dat",
        "data/a/b/é/baré.txt",
        "data/x/y/z/deep.json",
        "data/データ/測定結果.txt",
        METADATA_MEMBER,
    ]
    assert tar.format == tarfile.PAX_FORMAT


def test_write_bundle_starts_metadata_with_transaction_and_key_values(tmp_path: Path) -> None:
    metadata, _ = bundle_bytes(make_tree(tmp_path / "src", {"f.bin": b"x"}))

    assert metadata[:5] == [
        {"destinationTable": "Transactions.submitter", "value": 10},
        {"destinationTable": "Transactions.project", "value": "1234a"},
        {"destinationTable": "Transactions.instrument", "value": 54},
        {"destinationTable": "TransactionKeyValue", "key": "Tag", "value": "Blue"},
        {"destinationTable": "TransactionKeyValue", "key": "n", "value": 0},
    ]


def test_write_bundle_describes_each_file_like_the_upstream_bundler(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", TREE)
    stamp = datetime(2024, 5, 6, 7, 8, 9).timestamp()
    os.utime(source / "a" / "b" / "é" / "baré.txt", (stamp, stamp))

    metadata, _ = bundle_bytes(source)

    files = {(r["subdir"], r["name"]): r for r in metadata if r["destinationTable"] == "Files"}
    assert len(files) == len(TREE)
    nested = files[("a/b/é", "baré.txt")]
    content = TREE["a/b/é/baré.txt"]
    expected_time = datetime.fromtimestamp(int(stamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    assert nested == {
        "destinationTable": "Files",
        "name": "baré.txt",
        "subdir": "a/b/é",
        "size": len(content),
        "mimetype": "text/plain",
        "hashtype": "sha1",
        "hashsum": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        "ctime": expected_time,
        "mtime": expected_time,
    }
    assert files[("", "hello.txt")]["subdir"] == ""
    assert files[("", "random.dat")]["mimetype"] == "application/octet-stream"
    assert (
        files[("", "all-bytes.bin")]["hashsum"]
        == hashlib.sha1(ALL_BYTES, usedforsecurity=False).hexdigest()
    )


def test_write_bundle_metadata_txt_equals_returned_metadata(tmp_path: Path) -> None:
    metadata, data = bundle_bytes(make_tree(tmp_path / "src", TREE))

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(METADATA_MEMBER)
        assert member is not None
        document = json.loads(member.read())

    assert document == metadata == read_bundle(io.BytesIO(data)).metadata


def test_bundle_metadata_reads_back_as_file_models_with_transaction_paths(tmp_path: Path) -> None:
    metadata, _ = bundle_bytes(make_tree(tmp_path / "src", TREE))

    assert sorted(file.path for file in File.from_event(metadata)) == sorted(TREE)
    assert Transaction.from_event(metadata) == TRANSACTION


def test_write_bundle_gives_identical_bytes_for_the_same_tree(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", TREE)

    assert bundle_bytes(source)[1] == bundle_bytes(source)[1]


def test_write_bundle_writes_to_a_write_only_stream(tmp_path: Path) -> None:
    class WriteOnly:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def write(self, data: bytes) -> int:
            self.chunks.append(bytes(data))
            return len(data)

    sink = WriteOnly()
    write_bundle(str(make_tree(tmp_path / "src", TREE)), TRANSACTION, None, sink)  # type: ignore[arg-type]

    assert read_bundle(io.BytesIO(b"".join(sink.chunks))).files == TREE


def test_read_bundle_accepts_a_path(tmp_path: Path) -> None:
    _, data = bundle_bytes(make_tree(tmp_path / "src", TREE))
    (tmp_path / "bundle.tar").write_bytes(data)

    assert read_bundle(tmp_path / "bundle.tar").files == TREE
    assert read_bundle(str(tmp_path / "bundle.tar")).files == TREE


def test_read_bundle_rejects_tar_without_metadata(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("data/x"), io.BytesIO())

    with pytest.raises(ValueError, match=r"metadata\.txt"):
        read_bundle(io.BytesIO(buffer.getvalue()))


def test_write_bundle_rejects_a_transaction_that_already_has_an_id(tmp_path: Path) -> None:
    with pytest.raises(TransactionDuplicateAttributeError, match=r"Transactions\._id"):
        write_bundle(str(tmp_path), Transaction(_id=5, submitter=10), None, io.BytesIO())


@pytest.mark.parametrize(
    ("transaction", "key_values"),
    [
        (None, None),
        (Transaction(), []),
        (Transaction(submitter=10, description=""), None),
        (TRANSACTION, [TransactionKeyValue(key="k", value=None)]),
        (TRANSACTION, [TransactionKeyValue(key="", value="v")]),
    ],
)
def test_transaction_records_reject_empty_or_blank_metadata(
    transaction: Transaction | None, key_values: list[TransactionKeyValue] | None
) -> None:
    with pytest.raises(ValueError, match=r"MetaData is not valid yet\."):
        transaction_records(transaction, key_values)


def test_write_bundle_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_bundle(str(tmp_path / "nope"), TRANSACTION, None, io.BytesIO())


def test_write_bundle_bundles_an_empty_directory_as_metadata_only(tmp_path: Path) -> None:
    metadata, data = bundle_bytes(tmp_path)

    contents = read_bundle(io.BytesIO(data))
    assert contents.files == {}
    assert all(r["destinationTable"] != "Files" for r in metadata)


def test_write_bundle_skips_special_files_and_follows_file_symlinks(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"real.txt": b"real"})
    (source / "link.txt").symlink_to(source / "real.txt")
    (source / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(source / "fifo")

    _, data = bundle_bytes(source)

    assert read_bundle(io.BytesIO(data)).files == {"link.txt": b"real", "real.txt": b"real"}


def test_write_bundle_streams_a_large_file_with_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    size = 64 * MIB
    with (source / "large.bin").open("wb") as handle:
        handle.truncate(size)  # sparse: costs no disk, reads as zeros
        handle.seek(size // 2)
        handle.write(b"middle")
    target = tmp_path / "bundle.tar"

    tracemalloc.start()
    try:
        with target.open("wb") as handle:
            metadata = write_bundle(str(source), TRANSACTION, None, handle)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 * MIB, f"peak {peak} bytes while bundling {size} bytes"
    record = metadata[-1]
    assert record["size"] == size
    assert record["hashsum"] == _sha1_of_file(source / "large.bin")
    with tarfile.open(target, mode="r|") as tar:
        member = next(iter(tar))
        content = tar.extractfile(member)
        assert content is not None
        assert member.size == size
        assert _sha1_of_stream(content) == record["hashsum"]


def _sha1_of_file(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha1_of_stream(handle)


def _sha1_of_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    while chunk := stream.read(MIB):
        digest.update(chunk)
    return digest.hexdigest()

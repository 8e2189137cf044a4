"""The consumer.zip check and its safe extraction.

``check_archive`` reads the archive without running or extracting anything
and returns every problem it finds, each naming the file it is about: a
missing required file, an entry that would land outside the target directory
(absolute, ``..``, a link), an archive that expands past the size limit, a
JSONPath that does not parse (the parser quoted), a ``__main__.py`` that
does not compile, and the requirement lines of the reference example that
cannot work. It also says which of the shipped sample events the JSONPath
matches (``samples.py``), with a warning when it would never fire on a real
Pacifica. ``extract`` extracts only an archive that passed, counting the
bytes it writes (a zip's declared sizes may lie).
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pacifica.dispatcher.consumer.samples import sample_findings
from pacifica.dispatcher.errors import InvalidArchiveError
from pacifica.dispatcher.router import parse_jsonpath

ENTRY_POINT = "__main__.py"
JSONPATH_FILE = "jsonpath2.txt"
REQUIREMENTS_FILE = "requirements.txt"
INIT_SCRIPT = "init.sh"
REQUIRED = (JSONPATH_FILE, ENTRY_POINT)
MAX_EXPANDED_BYTES = 512 * 1024 * 1024  # everything extracted, together
MAX_ENTRIES = 10_000
MAX_RATIO = 200  # expanded / compressed size of an entry over 1 MiB: a zip bomb
CHUNK = 1 << 16

# Requirement lines of the reference example that cannot be installed, and why.
KNOWN_BAD_REQUIREMENTS = {
    "promises": "'promises' is not a package on the index; the `promise` module the example "
    "imports comes from 'promise': write 'promise'",
    "pacifica-notifications-consumer": "'pacifica-notifications-consumer' is not on the index; "
    "start-pacifica-notifications-consumer installs the `pacifica_notifications_consumer` "
    "module itself: remove this line",
}


class Severity(enum.Enum):
    """How much a finding matters: errors refuse the archive, the rest are shown."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One thing the check found, about one file of the archive."""

    file: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.file}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """Everything the check found; ``ok`` when nothing is an error."""

    archive: str
    findings: list[Finding] = field(default_factory=list)
    jsonpath: str | None = None

    @property
    def errors(self) -> list[Finding]:
        """The findings that refuse the archive."""
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def ok(self) -> bool:
        """True when the archive may be deployed."""
        return not self.errors

    def text(self) -> str:
        """The findings, one per line, and the verdict."""
        verdict = "valid" if self.ok else f"refused ({len(self.errors)} error(s))"
        return "\n".join([*(str(f) for f in self.findings), f"{self.archive}: {verdict}"])

    def raise_for_errors(self) -> None:
        """Return quietly when the archive passed.

        Raises:
            InvalidArchiveError: it did not; the message lists every error.
        """
        if not self.ok:
            raise InvalidArchiveError("\n".join(str(f) for f in self.errors))


def check_archive(path: str | os.PathLike[str]) -> CheckReport:
    """Check a consumer.zip without extracting or running anything."""
    name = os.fspath(path)
    try:
        archive = zipfile.ZipFile(name)
    except (OSError, zipfile.BadZipFile) as exc:
        return CheckReport(name, [Finding(os.path.basename(name), f"not a readable zip: {exc}")])
    with archive:
        findings = list(_entry_findings(archive.infolist()))
        members = {_normal(i.filename): i for i in archive.infolist() if not i.is_dir()}
        for required in REQUIRED:
            if required not in members:
                findings.append(Finding(required, "required file is missing from the archive"))
        jsonpath = _read_text(archive, members.get(JSONPATH_FILE), findings)
        entry = _read_text(archive, members.get(ENTRY_POINT), findings)
        requirements = _read_text(archive, members.get(REQUIREMENTS_FILE), findings)
    if jsonpath is not None:
        findings.extend(_jsonpath_findings(jsonpath))
    if entry is not None:
        findings.extend(_entry_point_findings(entry))
    if requirements is not None:
        findings.extend(requirement_findings(requirements))
    return CheckReport(name, findings, jsonpath.strip() if jsonpath else None)


def _normal(filename: str) -> str:
    return posixpath.normpath(filename.replace("\\", "/"))


def _entry_findings(infos: list[zipfile.ZipInfo]) -> Iterator[Finding]:
    """Entries that would escape the target, links, and sizes past the limits."""
    if len(infos) > MAX_ENTRIES:
        yield Finding("(archive)", f"{len(infos)} entries; at most {MAX_ENTRIES} are accepted")
    total = 0
    for info in infos:
        name = info.filename
        reason = unsafe_reason(info)
        if reason:
            yield Finding(name, reason)
        total += info.file_size
        compressed = max(info.compress_size, 1)
        if info.file_size > 1 << 20 and info.file_size / compressed > MAX_RATIO:
            yield Finding(
                name,
                f"expands {info.file_size / compressed:.0f} times ({info.compress_size} → "
                f"{info.file_size} bytes): refused as a zip bomb",
            )
    if total > MAX_EXPANDED_BYTES:
        yield Finding(
            "(archive)",
            f"expands to {total} bytes, past the limit of {MAX_EXPANDED_BYTES} bytes",
        )


def unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry would be unsafe (outside the target, or a link), or None."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link: links are refused"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path: it would extract outside the target directory"
    if ".." in name.split("/"):
        return "climbs out with '..': it would extract outside the target directory"
    if "\x00" in name:
        return "has a NUL character in its name"
    return None


def _read_text(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo | None, findings: list[Finding]
) -> str | None:
    if info is None or unsafe_reason(info) or info.file_size > 1 << 20:
        if info is not None and info.file_size > 1 << 20:
            findings.append(Finding(info.filename, "larger than 1 MiB; a text file is expected"))
        return None
    try:
        return archive.read(info).decode("utf-8")
    except UnicodeDecodeError as exc:
        findings.append(Finding(info.filename, f"is not UTF-8 text: {exc}"))
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:  # RuntimeError: encrypted
        findings.append(Finding(info.filename, f"cannot be read: {exc}"))
    return None


def _jsonpath_findings(text: str) -> list[Finding]:
    if not text.strip():
        return [Finding(JSONPATH_FILE, "is empty; it must hold one JSONPath")]
    try:
        path = parse_jsonpath(text)
    except ValueError as exc:
        return [Finding(JSONPATH_FILE, f"the JSONPath does not parse: {exc}")]
    return [Finding(JSONPATH_FILE, m, Severity[s]) for s, m in sample_findings(text, path)]


def _entry_point_findings(source: str) -> list[Finding]:
    try:
        compile(source, ENTRY_POINT, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return [Finding(ENTRY_POINT, f"does not compile: {exc.msg} ({where})")]
    except ValueError as exc:  # NUL bytes in the source
        return [Finding(ENTRY_POINT, f"does not compile: {exc}")]
    return []


def requirement_findings(text: str) -> list[Finding]:
    """The reference example's requirement lines that cannot be installed, with the fix."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        bare = line.split("#", 1)[0].strip()
        name = re.split(r"[\s\[<>=!~;@]", bare, maxsplit=1)[0].lower().replace("_", "-")
        if name in KNOWN_BAD_REQUIREMENTS:
            found.append(
                Finding(
                    REQUIREMENTS_FILE, f"line {number} {bare!r}: {KNOWN_BAD_REQUIREMENTS[name]}"
                )
            )
    return found


def extract(path: str | os.PathLike[str], target: Path) -> None:
    """Extract a checked archive into ``target`` (which must exist), counting what is written.

    Raises:
        InvalidArchiveError: the archive fails the check, or writes more than the size limit.
    """
    check_archive(path).raise_for_errors()
    root = target.resolve()
    written = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            destination = (root / _normal(info.filename)).resolve()
            if not destination.is_relative_to(root):  # checked already; belt and braces
                raise InvalidArchiveError(f"{info.filename}: outside the target directory")
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, destination.open("wb") as sink:
                while chunk := source.read(CHUNK):
                    written += len(chunk)
                    if written > MAX_EXPANDED_BYTES:
                        raise InvalidArchiveError(
                            f"{info.filename}: the archive expands past {MAX_EXPANDED_BYTES} bytes"
                        )
                    sink.write(chunk)

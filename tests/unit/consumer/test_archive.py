"""The consumer.zip check: every defect refused with its reason, naming the file."""

from __future__ import annotations

import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pacifica.dispatcher.cli import main as dispatcher_main
from pacifica.dispatcher.consumer import archive
from pacifica.dispatcher.consumer.archive import Severity, check_archive, extract
from pacifica.dispatcher.errors import InvalidArchiveError
from tests.consumer_example import CORRECTED, REAL_JSONPATH, REFERENCE, build_zip


def messages(path: Path, severity: Severity = Severity.ERROR) -> list[str]:
    return [
        f"{f.file}: {f.message}" for f in check_archive(path).findings if f.severity is severity
    ]


def test_the_corrected_reference_example_is_valid(tmp_path: Path) -> None:
    report = check_archive(build_zip(tmp_path / "consumer.zip", CORRECTED))
    assert report.ok, report.text()


def test_the_reference_requirements_lines_that_cannot_work_are_named(tmp_path: Path) -> None:
    errors = messages(build_zip(tmp_path / "consumer.zip", REFERENCE))
    assert len(errors) == 2, errors
    assert errors[0].startswith("requirements.txt: line 2 'pacifica-notifications-consumer'")
    assert "installs the `pacifica_notifications_consumer` module itself" in errors[0]
    assert errors[1].startswith("requirements.txt: line 3 'promises'")
    assert "write 'promise'" in errors[1]


def test_the_reference_jsonpath_is_warned_about_real_metadata_events(tmp_path: Path) -> None:
    warnings = messages(build_zip(tmp_path / "c.zip", CORRECTED), Severity.WARNING)
    assert len(warnings) == 1
    assert "source = '/pacifica/metadata/ingest'" in warnings[0]
    assert "http://metadata.pacifica.org/transactions?_id=N" in warnings[0]
    infos = messages(build_zip(tmp_path / "c.zip", CORRECTED), Severity.INFO)
    assert any(m.startswith("jsonpath2.txt: matches sample reference_ingest.json") for m in infos)
    assert any("does not match sample metadata_ingest.json" in m for m in infos)


def test_a_jsonpath_for_real_events_gets_no_warning(tmp_path: Path) -> None:
    files = {**CORRECTED, "jsonpath2.txt": '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]'}
    path = build_zip(tmp_path / "c.zip", files)
    assert messages(path, Severity.WARNING) == []
    assert "jsonpath2.txt: matches sample metadata_ingest.json" in " ".join(
        messages(path, Severity.INFO)
    )
    assert REAL_JSONPATH  # the test example's variant is exercised end to end


@pytest.mark.parametrize("missing", ["jsonpath2.txt", "__main__.py"])
def test_a_missing_required_file_is_refused(tmp_path: Path, missing: str) -> None:
    files = {k: v for k, v in CORRECTED.items() if k != missing}
    assert messages(build_zip(tmp_path / "c.zip", files)) == [
        f"{missing}: required file is missing from the archive"
    ]


def test_a_jsonpath_that_does_not_parse_quotes_the_parser(tmp_path: Path) -> None:
    files = {**CORRECTED, "jsonpath2.txt": '$[?(@["eventType"] = '}
    (error,) = messages(build_zip(tmp_path / "c.zip", files))
    assert error.startswith("jsonpath2.txt: the JSONPath does not parse: ")
    assert len(error) > len("jsonpath2.txt: the JSONPath does not parse: ")


def test_an_entry_point_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    files = {**CORRECTED, "__main__.py": "import sys\nif True print(sys.argv)\n"}
    (error,) = messages(build_zip(tmp_path / "c.zip", files))
    assert error.startswith("__main__.py: does not compile: ")
    assert "line 2" in error


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.py", "climbs out with '..'"),
        ("a/../../evil.py", "climbs out with '..'"),
        ("/etc/evil", "has an absolute path"),
        ("C:/evil", "has an absolute path"),
    ],
)
def test_entries_outside_the_target_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    path = build_zip(tmp_path / "c.zip", {**CORRECTED, name: "x"})
    (error,) = messages(path)
    assert error.startswith(f"{name}: {reason}")
    with pytest.raises(InvalidArchiveError, match="outside the target"):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    path = build_zip(tmp_path / "c.zip", CORRECTED)
    link = zipfile.ZipInfo("data")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "a") as zipped:
        zipped.writestr(link, "/etc/passwd")
    assert messages(path) == ["data: is a symbolic link: links are refused"]


def test_a_zip_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 8 << 20)
    files: dict[str, str | bytes] = {**CORRECTED, "zeros.bin": b"\0" * (16 << 20)}
    errors = messages(build_zip(tmp_path / "c.zip", files))
    assert any(e.startswith("zeros.bin: expands") and "zip bomb" in e for e in errors), errors
    assert any(e.startswith("(archive): expands to 16") for e in errors), errors


def test_every_defect_is_reported_at_once(tmp_path: Path) -> None:
    files = {"__main__.py": "def (", "../x": "", "requirements.txt": "promises\n"}
    errors = messages(build_zip(tmp_path / "c.zip", files))
    assert [e.split(":")[0] for e in errors] == [
        "../x",
        "jsonpath2.txt",
        "__main__.py",
        "requirements.txt",
    ]


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.zip"
    path.write_bytes(b"not a zip")
    assert messages(path)[0].startswith("c.zip: not a readable zip")


def test_extract_writes_the_files(tmp_path: Path) -> None:
    path = build_zip(tmp_path / "c.zip", {**CORRECTED, "lib/helper.py": "X = 1\n"})
    (tmp_path / "out").mkdir()
    extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "lib" / "helper.py").read_text() == "X = 1\n"
    assert (tmp_path / "out" / "__main__.py").read_text() == CORRECTED["__main__.py"]


def test_both_commands_check_and_exit_non_zero_on_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = build_zip(tmp_path / "bad.zip", REFERENCE)
    good = build_zip(tmp_path / "good.zip", CORRECTED)
    assert dispatcher_main(["consumer", "check", str(bad)]) == 1
    assert "line 3 'promises'" in capsys.readouterr().out
    assert dispatcher_main(["consumer", "check", str(good)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("good.zip: valid")
    done = subprocess.run(
        [sys.executable, "-m", "pacifica.dispatcher.consumer.command", "--check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "error: requirements.txt: line 2 'pacifica-notifications-consumer'" in done.stdout


def test_a_pip_failure_names_the_requirement_lines_it_is_about(tmp_path: Path) -> None:
    from pacifica.dispatcher.consumer.environment import failing_lines

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("jsonpath2\npacifica-notifications-consumer\npromises  # typo\n")
    message = (
        "ERROR: Could not find a version that satisfies the requirement promises "
        "(from -r requirements.txt (line 3))"
    )
    assert failing_lines(requirements, message) == ["line 3 'promises'"]

"""The Consumer Expectations document's uppercase example, verbatim, and a zip builder.

``REFERENCE`` holds the four files exactly as the reference document shows them;
``CORRECTED`` is what the README's "Deploy a consumer.zip" shows: the two
requirement lines that cannot work replaced.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

INIT_SH = "#!/usr/bin/env sh\n\nexit 0\n"
JSONPATH = '$[?(@["eventID"] and (@["eventType"] = "org.pacifica.metadata.ingest") and (@["source"] = "/pacifica/metadata/ingest"))]["data"][*][?((@["destinationTable"] = "Files") and (@["mimetype"] = "text/plain"))]["_id"]\n'
REQUIREMENTS = "jsonpath2\npacifica-notifications-consumer\npromises\n"
MAIN_PY = '#!/usr/bin/env python3\n\nimport json\nimport os\nimport shutil\nimport sys\n\nfrom jsonpath2 import Path\nfrom pacifica_notifications_consumer import download, upload\nfrom promise import Promise\n\n# execute only if run as a top-level script\nif __name__ == \'__main__\':\n  # path to directory for input CloudEvents notification\n  orig_event_path = sys.argv[1]\n\n  # path to directory for output CloudEvents notification\n  new_event_path = sys.argv[2]\n\n  def upload_did_fulfill(d):\n    """Callback for Pacifica uploader promise\'s eventual value.\n\n    Args:\n        d (dict): CloudEvents notification.\n\n    Returns:\n        Promise[bool]: True for success, False otherwise.\n\n    Raises:\n        BaseException: If an error occurs.\n    """\n\n    # delete entire directory tree for input CloudEvents notification\n    shutil.rmtree(orig_event_path, ignore_errors=True)\n\n    # delete entire directory tree for output CloudEvents notification\n    shutil.rmtree(new_event_path, ignore_errors=True)\n\n    # return True for success\n    return Promise(lambda resolve, reject: resolve(True))\n\n  def download_did_fulfill(d):\n    """Callback for Pacifica downloader promise\'s eventual value.\n\n    Args:\n        d (dict): CloudEvents notification.\n\n    Returns:\n        Promise[bool]: True for success, False otherwise.\n\n    Raises:\n        BaseException: If an error occurs.\n    """\n\n    # iterate over plain-text files\n    for file_d in [ match_data.current_value for match_data in Path.parse_str(\'$["data"][*][?(@["destinationTable"] = "Files" and @["mimetype"] = "text/plain")]\').match(d) ]:\n      # open input data file\n      with open(os.path.join(orig_event_path, \'downloads\', file_d[\'subdir\'], file_d[\'name\']), \'r\') as orig_file:\n        # open output data file\n        with open(os.path.join(new_event_path, \'uploads\', file_d[\'subdir\'], file_d[\'name\']), \'w\') as new_file:\n          # read input data file, convert cased characters to uppercase, and then write output data file\n          new_file.write(orig_file.read().upper())\n\n    # invoke Pacifica uploader with specified transaction attributes and key-value pairs\n    return upload(new_event_path, {\n      \'Transactions.instrument\': [ match_data.current_value for match_data in Path.parse_str(\'$["data"][*][?(@["destinationTable"] = "Transactions.instrument")]["value"]\').match(d) ][0],\n      \'Transactions.proposal\': [ match_data.current_value for match_data in Path.parse_str(\'$["data"][*][?(@["destinationTable"] = "Transactions.proposal")]["value"]\').match(d) ][0],\n      \'Transactions.submitter\': [ match_data.current_value for match_data in Path.parse_str(\'$["data"][*][?(@["destinationTable"] = "Transactions.submitter")]["value"]\').match(d) ][0],\n    }, {\n      \'Transactions._id\': [ match_data.current_value for match_data in Path.parse_str(\'$["data"][*][?(@["destinationTable"] = "Transactions._id")]["value"]\').match(d) ][0],\n    }).then(upload_did_fulfill)\n\n  # invoke Pacifica downloader\n  download(orig_event_path).then(download_did_fulfill)\n'
#: The reference's JSONPath with the condition real Metadata events fail (their source is a
#: transactions URL) left out, and derived transactions (the consumer's own uploads) skipped.
REAL_JSONPATH = (
    '$[?(@["eventID"] and (@["eventType"] = "org.pacifica.metadata.ingest") and not'
    ' @["data"][*][?(@["destinationTable"] = "TransactionKeyValue"'
    ' and @["key"] = "Transactions._id")])]'
    '["data"][*][?((@["destinationTable"] = "Files") and (@["mimetype"] = "text/plain"))]["_id"]'
)
CORRECTED_REQUIREMENTS = "jsonpath2\npromise\n"

REFERENCE = {
    "init.sh": INIT_SH,
    "jsonpath2.txt": JSONPATH,
    "requirements.txt": REQUIREMENTS,
    "__main__.py": MAIN_PY,
}
CORRECTED = {**REFERENCE, "requirements.txt": CORRECTED_REQUIREMENTS}


def build_zip(path: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (name → text or bytes) into a zip at ``path``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path

"""The names of a pacifica-dispatcher-<name> project, derived from its project name.

The rules are the naming table of the upstream dispatcher SOP:

* letters are transliterated to ASCII (``Café`` → ``Cafe``), because a
  distribution name must be ASCII and the package name should match it;
* every character that is not a letter, a digit or whitespace is removed
  (``Hello, world!`` → ``Hello world``; ``proxy-mod`` → ``proxymod``);
* the remaining words (spans of letters and digits) make the names:
  ``hello-world`` (repository, console script), ``hello_world`` (package
  ``pacifica/dispatcher_hello_world``, JSONPath and test files) and
  ``HelloWorld`` (``HelloWorldEventHandler``, ``HelloWorldTestCase``; each
  word's first letter is upper-cased and the rest kept, so ``NMR data`` gives
  ``NMRData``).

A name is refused when it has no word, or when its first word starts with a
digit (``2D Viewer`` would make the class ``2DViewerEventHandler``).

cookiecutter loads this module as a Jinja extension (``_extensions`` in
cookiecutter.json); ``pacifica.dispatcher.scaffold`` loads it to check a name
before rendering. It needs only the standard library, Jinja and the
transliteration table that cookiecutter's slugify already depends on.
"""

from __future__ import annotations

import unicodedata

from jinja2 import Environment
from jinja2.ext import Extension

try:
    from text_unidecode import unidecode
except ImportError:  # pragma: no cover - python-slugify may use Unidecode instead
    try:
        from unidecode import unidecode
    except ImportError:

        def unidecode(text: str) -> str:
            """Drop accents only: the fallback when no transliteration table is installed."""
            decomposed = unicodedata.normalize("NFKD", text)
            return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(name: str) -> list[str]:
    """A project name's ASCII words: transliterated, punctuation removed, split at whitespace."""
    text = unidecode(name)
    kept = "".join(c for c in text if c.isascii() and (c.isalnum() or c.isspace()))
    return kept.split()


def slug(name: str, separator: str = "-") -> str:
    """The lower-case words joined by ``separator``: ``hello-world`` or ``hello_world``."""
    return separator.join(word.lower() for word in words(name))


def upper_camel(name: str) -> str:
    """The words in UpperCamelCase: ``HelloWorld``."""
    return "".join(word[0].upper() + word[1:] for word in words(name))


def name_problem(name: str) -> str:
    """Why ``name`` cannot name a project, or ``""`` when it can."""
    found = words(name)
    if not found:
        return (
            f"the project name {name!r} has no letters or digits (after transliteration to "
            "ASCII); the project's names are made of them, e.g. 'Hello, world!' makes "
            "pacifica-dispatcher-hello-world"
        )
    if found[0][0].isdigit():
        return (
            f"the project name {name!r} must start with a letter: "
            f"{upper_camel(name)}EventHandler would not be a valid Python class name"
        )
    return ""


class DispatcherNamesExtension(Extension):
    """The naming rules as Jinja filters, plus ``python_literal`` (repr) for the hooks."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["dispatcher_slug"] = slug
        environment.filters["dispatcher_class"] = upper_camel
        environment.filters["dispatcher_name_problem"] = name_problem
        environment.filters["python_literal"] = repr

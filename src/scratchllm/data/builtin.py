"""The built-in corpus: English prose taken offline from this Python installation's documentation.

Two kinds of documents, both shipped with every CPython:
- the language reference topics in ``pydoc_data.topics`` (what ``help("if")`` shows);
- the docstrings of a fixed list of standard-library modules, one document per module.

Nothing is downloaded, and the result is deterministic for a given Python installation, so a demo
run on a fresh machine needs no data at all. The text differs slightly between Python versions.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass

# Standard-library modules whose docstrings read as prose. A fixed list (not a scan of sys.modules)
# keeps the corpus deterministic and avoids modules with import-time side effects (antigravity, this).
DOCSTRING_MODULES = (
    "abc argparse array ast asyncio base64 bdb binascii bisect builtins bz2 calendar cmd code "
    "codecs collections collections.abc colorsys compileall concurrent.futures configparser "
    "contextlib contextvars copy copyreg csv ctypes dataclasses datetime dbm decimal difflib dis "
    "doctest email email.message email.utils enum filecmp fileinput fnmatch fractions ftplib "
    "functools gc getopt gettext glob graphlib gzip hashlib heapq hmac html html.parser "
    "http.client http.cookiejar http.cookies http.server imaplib importlib importlib.resources "
    "inspect io ipaddress itertools json json.decoder keyword linecache locale logging "
    "logging.handlers lzma mailbox math mimetypes mmap modulefinder multiprocessing "
    "multiprocessing.pool netrc numbers operator optparse os os.path pathlib pdb pickle "
    "pickletools pkgutil platform plistlib poplib pprint profile pstats pty queue quopri random "
    "re reprlib rlcompleter runpy sched secrets selectors shelve shlex shutil signal site smtplib "
    "socket socketserver sqlite3 ssl stat statistics string stringprep struct subprocess "
    "symtable sys sysconfig tabnanny tarfile tempfile textwrap threading time timeit token "
    "tokenize trace traceback tracemalloc types typing unicodedata unittest unittest.mock "
    "urllib.parse urllib.request uuid warnings wave weakref webbrowser xml.dom.minidom "
    "xml.etree.ElementTree xml.sax xmlrpc.client zipapp zipfile zipimport zlib zoneinfo"
).split()


@dataclass(frozen=True)
class BuiltinDocument:
    """One document of the built-in corpus: a stable name and its text."""

    name: str
    text: str


def _topic_documents() -> list[BuiltinDocument]:
    from pydoc_data.topics import topics

    return [
        BuiltinDocument(f"topic:{key}", topics[key].strip())
        for key in sorted(topics)
        if topics[key].strip()
    ]


def _module_document(module_name: str, seen: set[str]) -> BuiltinDocument | None:
    """All public docstrings of one module, in name order; a docstring seen before is skipped."""
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module missing from this build (e.g. no _ssl) is simply left out
        return None
    parts: list[str] = []
    for name, obj in [("", module), *sorted(vars(module).items())]:
        if name.startswith("_"):
            continue
        doc = inspect.getdoc(obj)
        if not doc or len(doc) < 40 or doc in seen:
            continue
        seen.add(doc)
        parts.append(f"{name}\n\n{doc}" if name else doc)
    if not parts:
        return None
    return BuiltinDocument(f"module:{module_name}", "\n\n".join(parts))


def builtin_documents() -> list[BuiltinDocument]:
    """The whole built-in corpus (about 1.2 MB), topics first, then modules, in a fixed order."""
    docs = _topic_documents()
    seen: set[str] = set()
    # Reading some attributes (typing.io, typing.re …) warns about deprecation: irrelevant here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in DOCSTRING_MODULES:
            doc = _module_document(module_name, seen)
            if doc is not None:
                docs.append(doc)
    return docs

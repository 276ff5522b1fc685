"""The built-in corpus: English prose taken offline from this Python installation's documentation.

Two kinds of documents, both shipped with every CPython:
- the language reference topics in ``pydoc_data.topics`` (what ``help("if")`` shows);
- the docstrings of a fixed list of standard-library modules, one document per module.

Nothing is downloaded, and the result is deterministic for a given Python installation, so a demo
run on a fresh machine needs no data at all. The text differs slightly between Python versions.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

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


def _source_docstrings(path: str) -> list[tuple[str, str]]:
    """(name, docstring) of a module file, its public classes, functions and methods, read with
    ``ast`` so that nothing another library patched into the live module can leak in."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    found = [("", ast.get_docstring(tree) or "")]
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith("_"):
            continue
        found.append((node.name, ast.get_docstring(node) or ""))
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                is_def = isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
                if is_def and not member.name.startswith("_"):
                    found.append((f"{node.name}.{member.name}", ast.get_docstring(member) or ""))
    return found


def _live_docstrings(module_name: str) -> list[tuple[str, str]]:
    """(name, docstring) of a compiled module's public members, in name order."""
    module = importlib.import_module(module_name)
    found = [("", inspect.getdoc(module) or "")]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        found.append((name, inspect.getdoc(obj) or ""))
    return found


def _module_document(module_name: str, seen: set[str]) -> BuiltinDocument | None:
    """All public docstrings of one module; a docstring seen before is skipped."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None:  # a module missing from this build is simply left out
        return None
    origin = spec.origin or ""
    try:
        if origin.endswith(".py"):
            docstrings = _source_docstrings(origin)
        else:
            docstrings = _live_docstrings(module_name)
    except (ImportError, OSError, SyntaxError):
        return None
    parts: list[str] = []
    for name, doc in docstrings:
        doc = inspect.cleandoc(doc)
        if len(doc) < 40 or doc in seen:
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

"""The bundled default corpus: the documentation that ships with Python itself.

Real English technical prose that exists on every machine with Python, so the default training run needs
no download: the pydoc topic pages (``pydoc_data.topics``, the language reference as shown by ``help()``)
plus the docstrings of the standard library's public modules, classes, functions and methods. The build is
deterministic for a given Python version (sorted module and member order, one document per docstring, each
module imported in a fresh interpreter so import side effects cannot leak); its SHA-256 is recorded beside
the cached text and in every run's ``run.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

from ..atomic import write_text_atomic

# Modules that open windows, print on import, start threads, or are not documentation.
_SKIP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "ensurepip",
    "venv", "pydoc_data", "test", "__main__", "xxlimited", "xxlimited_35", "xxsubtype", "_testcapi",
}


def _docs_of_module(name: str) -> list[str]:
    """Docstrings of a module and the public members defined in it (classes recursively one level)."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - platform modules that do not import here are simply absent
            return []
    docs: list[str] = []

    def add(obj, title: str) -> None:
        doc = inspect.getdoc(obj)
        if doc and len(doc) >= 40:
            docs.append(f"{title}\n\n{doc.strip()}")

    add(module, f"Module {name}")
    for attr in sorted(vars(module)):
        if attr.startswith("_"):
            continue
        obj = vars(module)[attr]
        if getattr(obj, "__module__", None) != name or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        add(obj, f"{name}.{attr}")
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                if not meth.startswith("_"):
                    member = vars(obj)[meth]
                    if inspect.isroutine(member) or isinstance(member, property):
                        add(member, f"{name}.{attr}.{meth}")
    return docs


def _stdlib_modules() -> list[str]:
    """Public standard-library modules and their public submodules (e.g. ``email.mime.text``), sorted."""
    import importlib.util
    import pkgutil

    names = set()
    for top in sys.stdlib_module_names:
        if top.startswith("_") or top in _SKIP:
            continue
        names.add(top)
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            continue
        for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=top + "."):
            parts = info.name.split(".")
            if not any(p.startswith("_") or p in {"test", "tests", "idle_test"} for p in parts):
                names.add(info.name)
    return sorted(names)


def _collect() -> list[str]:
    from pydoc_data.topics import topics

    documents = [f"Topic {key}\n\n{topics[key].strip()}" for key in sorted(topics)]
    for name in _stdlib_modules():
        documents.extend(_docs_of_module(name))
    return documents


def build_documents() -> list[str]:
    """Build the documents in a fresh interpreter (isolated from this process's imports and state)."""
    code = "import json,sys; from lmdynamics.data.python_docs import _collect; json.dump(_collect(), sys.stdout)"
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, check=True, timeout=600)
    return json.loads(out.stdout)


def corpus_hash(documents: list[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        h.update(doc.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def load_python_docs(cache_dir: str | os.PathLike) -> tuple[list[str], str]:
    """The corpus as documents and its SHA-256, built once per Python version and cached as JSON."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    path = Path(cache_dir) / f"python-docs-{version}.json"
    if path.is_file():
        blob = json.loads(path.read_text(encoding="utf-8"))
        if corpus_hash(blob["documents"]) == blob["sha256"]:
            return blob["documents"], blob["sha256"]
    documents = build_documents()
    digest = corpus_hash(documents)
    write_text_atomic(path, json.dumps({"python": version, "sha256": digest, "documents": documents}))
    return documents, digest

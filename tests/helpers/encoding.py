"""Python's default file encoding made ASCII for a block, in process, as under ``LANG=C`` without UTF-8 mode: a
file written or read without ``encoding="utf-8"`` then fails on any non-ASCII character."""

import contextlib
import locale


@contextlib.contextmanager
def ascii_locale():
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)

"""What a figure says: the text of every figure saved during a test (titles, axis labels, ticks, legends)."""

import matplotlib.text
import pytest
from matplotlib.figure import Figure


@pytest.fixture
def figure_texts(monkeypatch):
    """{figure file name without .png: every text drawn in it}, filled as figures are saved."""
    texts: dict[str, str] = {}
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        name = str(fname).rsplit("/", 1)[-1].lstrip(".").split(".png")[0]  # .NAME.png.<hex>.tmp -> NAME
        texts[name] = "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return texts


def text_of(texts: dict[str, str], stem: str) -> str:
    """The text of the one figure whose name starts with ``stem``."""
    found = [t for name, t in texts.items() if name.startswith(stem)]
    assert len(found) == 1, (stem, sorted(texts))
    return found[0]

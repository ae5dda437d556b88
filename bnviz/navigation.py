"""The app's pages, grouped in sections, with the titles and addresses the sidebar shows.

A page is a file ``pages/<n>_<Title_words>.py``. Its address is ``/<Title_words>``, the one
Streamlit gave it when it found the ``pages/`` folder by itself, so every link made before the
sections existed still opens the same view. The home page (``pages/0_Home.py``) is served at ``/``.
A page that no section lists still appears, under "More views": a new view is never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOME = 0
# Section -> page numbers, in the order the sidebar shows them.
SECTIONS: dict[str, tuple[int, ...]] = {
    "Basics": (HOME, 1, 3, 7, 14),
    "Training dynamics": (2, 5, 8, 9, 12, 18),
    "Inference": (4, 6),
    "Beyond BN": (11, 13, 15, 16, 17),
    "Your runs": (10,),
}
MORE = "More views"


@dataclass(frozen=True)
class PageEntry:
    number: int
    path: Path          # relative to the app's folder, e.g. pages/1_Activation_histograms.py
    title: str          # "Activation histograms"
    url_path: str       # "Activation_histograms"; "" for the home page


def page_entries(app_dir: Path) -> list[PageEntry]:
    """Every page file under ``app_dir/pages``, by number."""
    entries = []
    for path in app_dir.joinpath("pages").glob("*.py"):
        number, _, words = path.stem.partition("_")
        if not number.isdigit() or not words:
            continue
        entries.append(PageEntry(int(number), path.relative_to(app_dir), words.replace("_", " "),
                                 "" if int(number) == HOME else words))
    return sorted(entries, key=lambda e: e.number)


def sections(app_dir: Path) -> dict[str, list[PageEntry]]:
    """Section title -> its pages (sections without a page left out)."""
    entries = {e.number: e for e in page_entries(app_dir)}
    out: dict[str, list[PageEntry]] = {}
    for title, numbers in SECTIONS.items():
        listed = [entries.pop(n) for n in numbers if n in entries]
        if listed:
            out[title] = listed
    if entries:
        out[MORE] = list(entries.values())
    return out

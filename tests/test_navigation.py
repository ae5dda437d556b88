"""Navigation: sections, the home page called Home, every page listed, old addresses kept."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from bnviz import navigation

ROOT = Path(__file__).resolve().parents[1]


def test_every_page_file_is_in_exactly_one_section_with_its_old_address():
    files = sorted(p.relative_to(ROOT) for p in (ROOT / "pages").glob("*.py"))
    listed = [e for entries in navigation.sections(ROOT).values() for e in entries]
    assert sorted(e.path for e in listed) == files
    assert len({e.path for e in listed}) == len(listed)
    for e in listed:
        # Streamlit's own address for a file in pages/: the name without its number prefix.
        expected = "" if e.number == navigation.HOME else e.path.stem.split("_", 1)[1]
        assert e.url_path == expected
        assert e.title == e.path.stem.split("_", 1)[1].replace("_", " ")


def test_sections_in_order_and_home_first():
    sections = navigation.sections(ROOT)
    titles = list(sections)
    assert titles[:5] == ["Basics", "Training dynamics", "Inference", "Beyond BN", "Your runs"][:len(titles[:5])]
    first = sections["Basics"][0]
    assert first.number == navigation.HOME and first.title == "Home"


def test_a_page_no_section_names_still_appears(tmp_path):
    (tmp_path / "pages").mkdir()
    for name in ("0_Home.py", "1_Activation_histograms.py", "99_New_view.py", "notes.py"):
        (tmp_path / "pages" / name).write_text("")
    sections = navigation.sections(tmp_path)
    assert [e.title for e in sections[navigation.MORE]] == ["New view"]
    assert [e.title for e in sections["Basics"]] == ["Home", "Activation histograms"]


def test_app_serves_the_home_page_by_default():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["steps"] = "100"
    at.run()
    assert not at.exception
    assert at.title[0].value.startswith("bnviz")
    # the list of views on the home page is grouped like the sidebar
    sections = [m.value for m in at.markdown if m.value.startswith("**") and m.value.strip("*") in navigation.SECTIONS]
    assert sections and sections[0] == "**Basics**"

"""bnviz's entry point: the views in sections (bnviz.navigation) and the one the address asks for.

``streamlit run app.py`` (or ``bnviz app``) serves it. Each view is a script in ``pages/``; the
home page is ``pages/0_Home.py``, served at ``/``.
"""
from pathlib import Path

import streamlit as st

from bnviz import navigation

APP_DIR = Path(__file__).resolve().parent

st.set_page_config(page_title="bnviz: BatchNorm, visualized", page_icon="📊", layout="wide")
st.navigation({
    section: [st.Page(APP_DIR / entry.path, title=entry.title, url_path=entry.url_path or None,
                      default=entry.number == navigation.HOME)
              for entry in entries]
    for section, entries in navigation.sections(APP_DIR).items()
}, expanded=True).run()   # every section in sight: collapsed, the sidebar hid the last three behind "View more"

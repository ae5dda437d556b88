"""``python -m bnviz ...``: the ``bnviz`` command (:mod:`bnviz.cli`), for a checkout that is not installed."""
from .cli import main

raise SystemExit(main(prog="python -m bnviz"))

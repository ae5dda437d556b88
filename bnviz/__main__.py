"""``python -m bnviz export ...``: see :mod:`bnviz.cli`."""
from .cli import main

raise SystemExit(main())

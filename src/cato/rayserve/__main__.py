"""``python -m cato.rayserve``: see :mod:`cato.rayserve.launch`."""

from cato.rayserve.launch import main

raise SystemExit(main())

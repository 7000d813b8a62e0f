"""``python -m federation.cli``: fedctl."""

from federation.cli import main

raise SystemExit(main())

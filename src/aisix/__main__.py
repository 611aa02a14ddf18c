"""`python -m aisix` runs the `aisix` command."""

from aisix.cli import main

raise SystemExit(main())

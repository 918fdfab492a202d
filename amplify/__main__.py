"""``python -m amplify ...``: a launcher for the command line, which lives above the library in
:mod:`amplify_cli` (nothing in the library imports it; this file is only ever run, never imported)."""
import sys

from amplify_cli.main import main

sys.exit(main())

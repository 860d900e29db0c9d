"""`python -m alexspec` runs the command line."""
import sys

from alexspec.cli import main

sys.exit(main())

"""`python -m pydnnz ...` runs the `dnnz` command line."""
import sys

from .cli import main

sys.exit(main())

"""`python -m pydnnz.cli ...` runs the `dnnz` command line."""
import sys

from . import main

sys.exit(main())

"""``python -m simplellama ...``: the same command line as the ``simplellama`` console script."""

import sys

from .cli import main
from .parallel import shutdown_distributed

if __name__ == "__main__":
    code = main()
    shutdown_distributed(exit_code=code)  # torchrun ranks leave the process group (see parallel.py)
    sys.exit(code)

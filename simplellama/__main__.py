"""``python -m simplellama ...``: the same command line as the ``simplellama`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    code = main()
    from .parallel import shutdown_distributed  # torch only now: --version / --help stay instant

    shutdown_distributed(exit_code=code)  # torchrun ranks leave the process group (see parallel.py)
    sys.exit(code)

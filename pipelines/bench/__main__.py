"""python -m pipelines.bench [--tiny] [--budget-s S] [--out DIR]"""

import time

STARTED = time.monotonic()  # before torch and diffusers are imported: the budget counts their import too

import sys  # noqa: E402

from pipelines.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], command=["python3", "-m", "pipelines.bench", *sys.argv[1:]], started=STARTED))

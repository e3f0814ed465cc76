"""``python -m aibill``: the ``aibill`` command line (see :mod:`aibill.cli`)."""

from aibill.cli import main

if __name__ == "__main__":
    main()

"""`python -m agent`: parse arguments, then hand over to main."""

import sys

from agent.main import main

if __name__ == "__main__":
    sys.exit(main())

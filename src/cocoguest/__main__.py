"""``python -m cocoguest``."""

import sys

from cocoguest.cli.main import main

sys.exit(main())

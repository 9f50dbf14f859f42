"""`python -m weightmapper` runs the CLI."""

import sys

from weightmapper.cli.main import main

sys.exit(main())

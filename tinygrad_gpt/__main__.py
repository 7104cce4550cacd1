"""`python -m tinygrad_gpt` is the `tinygpt` command."""

import sys

from .cli import main

sys.exit(main())

import sys

from wapipe.cli import main

sys.exit(main())

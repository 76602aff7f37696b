import sys

from leadstream.server.cli import main

sys.exit(main())

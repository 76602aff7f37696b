import sys

from leadstream.server.cli.main import main

sys.exit(main())

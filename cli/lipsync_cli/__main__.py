import sys

from lipsync_cli.app import main

sys.exit(main())

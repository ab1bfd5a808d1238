import sys

from cats_bridge.main import main

sys.exit(main())

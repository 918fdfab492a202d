import sys

from clients.libero.evaluate import main

sys.exit(main())

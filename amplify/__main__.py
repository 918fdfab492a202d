import sys

from amplify.cli import main

sys.exit(main())

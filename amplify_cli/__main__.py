import sys

from amplify_cli.main import main

sys.exit(main())

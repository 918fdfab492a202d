"""The ``amplify`` command line (:mod:`amplify_cli.main`), the layer above every part it runs."""

"""The LIBERO robot client: evaluate a served policy on LIBERO tasks or the built-in world.
``python -m clients.libero --help``; set up LIBERO's environment with
``python -m clients.libero.setup_env``. See docs/clients.md."""

"""The three trainers (``amplify train mt|fd|id``), each a :class:`training.loop.TrainTask`."""

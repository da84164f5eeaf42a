"""Faust agents and timers: thin shells that decode, call ``retention``, write
tables and send. Each module exposes ``install(app)``, registered as a
``churnwatch.components`` entry point."""

"""The retention domain, pure: no Kafka, Faust, Redis or Prometheus in here.

Time is always passed in (event time, as integer microseconds since the Unix
epoch, UTC) so every rule can be tested as a plain function and a replay of the
same input reproduces the same results.
"""

from retention.compiled import use_compiled

#: Whether the hot modules run compiled (``retention/compiled.py``): only a build
#: made from the current sources is used.
COMPILED = use_compiled(__path__)

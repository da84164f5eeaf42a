"""The retention domain, pure: no Kafka, Faust, Redis or Prometheus in here.

Time is always passed in (event time, as integer microseconds since the Unix
epoch, UTC) so every rule can be tested as a plain function and a replay of the
same input reproduces the same results.
"""

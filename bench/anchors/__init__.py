"""Anchors of the pipeline bench: the same naive per-customer aggregate (count of events,
total spend, last event time) on Quix Streams and on Kafka Streams, run on the same broker
and input as churnwatch (``bench/anchors/runner.py``)."""

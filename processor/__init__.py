"""The customer processor: raw input bytes in, customer state, alerts and dead
letters out, one concept a module and none of them importing Faust or aiokafka.

- ``batch``: ``CustomerBatch``, one batch of input through the rooms below, per
  input partition: positions, intake, alignment, customers, due, outbox, commit;
- ``ports``: what the processor runs on (``Parts``: table, senders, the consumer's
  offsets), implemented over Faust by agents/delivery.py and in memory by
  ``testing``;
- ``positions``: which messages of a partition to process now (a batch cut off by a
  crash is redone whole; gaps in offsets are read again);
- ``partition``: the partition record: loaded, stored, its offsets;
- ``intake``: decoding, validation, dead-letter records;
- ``routing``: input events read off their key's partition, forwarded home;
  progress announced to the other partitions;
- ``alignment``: the aligned time, and the events waiting for it;
- ``customers``: the customers a batch touches, folded and assessed;
- ``days``: the day-keyed bucket index shared by ``alignment`` and ``due``;
- ``due``: the due-time index, re-assessing customers who went quiet;
- ``outbox``: alerts and forwards kept in the table until the broker has them;
- ``commit``: the crash-safe order of a batch's writes (the only place it lives);
- ``testing``: an in-memory table, senders and offsets to run the processor on.

The agent (agents/customers.py) is a thin shell over ``CustomerBatch``.
"""

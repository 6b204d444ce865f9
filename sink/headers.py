"""AMQP header names callback-sink writes on its messages.

The worker carries its own attempt count instead of reading ``x-death`` (whose shape has
changed across RabbitMQ versions), and dead letters say why they died.
"""

EVENT = "x-sink-event"  # event name, e.g. muc:apply
ATTEMPT = "x-sink-attempt"  # 1 for the first delivery, +1 per retry
DELIVERIES = "x-sink-deliveries"  # deliveries before this copy was published (crash-loop budget)
FIRST_FAILURE = "x-sink-first-failure"  # ISO time of the first failed attempt
LAST_FAILURE = "x-sink-last-failure"  # ISO time of the latest failed attempt
FAILED_HANDLERS = "x-sink-failed-handlers"  # comma-separated handler names
ERROR_TYPE = "x-sink-error-type"  # exception class of the (first) failed handler
ERROR = "x-sink-error"  # its message, truncated
TRACEBACK = "x-sink-traceback"  # its formatted traceback, no locals, last 4,096 chars
# attempts-exhausted | permanent | delivery-limit | crash-loop | undecodable
DEAD_REASON = "x-sink-dead-reason"
SETTLED = "x-sink-settled"  # handlers already done for this callback: a retry skips them
REPLAYED = "x-sink-replayed"  # set when `dlq replay` puts a dead letter back: its ISO time
REPLAY_OF = "x-sink-replay-of"  # with it: the x-sink-dead-reason of the dead letter replayed
SUSPECT = "x-sink-suspect"  # a deferred copy of a delivery that ran alone: it runs alone again
#: Set by the broker on each delivery from a quorum queue; never ours to read or show.
BROKER_DELIVERY_COUNT = "x-delivery-count"

"""The worker: consume callbacks from RabbitMQ, claim, dispatch to handlers, settle."""

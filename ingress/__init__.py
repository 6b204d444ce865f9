"""The ingress: an aiohttp app that verifies callbacks and makes them durable in RabbitMQ."""

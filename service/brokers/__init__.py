"""Brokers: Dramatiq's Redis and RabbitMQ brokers with Callboard's fixes, the embedded Redis, and
the factory that builds a broker with the whole middleware stack."""

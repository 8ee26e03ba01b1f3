"""Application-protocol recognition (MQTT, AMQP, XMPP, STOMP, NATS) from payload bytes, shared by sFlow and the meter."""

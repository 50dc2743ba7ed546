"""What an operator sees and wires around a node: metrics, logs, webhooks, the event loop."""

"""Reading events back: the lookup index, message traces, the delivery log, where a message is now."""

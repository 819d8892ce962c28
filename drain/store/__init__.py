"""Message state in Redis: keys, the stored record, every state move, Lua scripts, the connection."""

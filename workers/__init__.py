"""RQ side of drain: the job functions (their dotted paths are stored in Redis) and the worker."""

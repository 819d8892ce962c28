"""The worker: claim a batch, validate, gate, deliver, settle; housekeeping and the RQ glue."""

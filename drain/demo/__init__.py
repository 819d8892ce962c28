"""The demo: seeded backlogs, a local SMTP sink, and the end-to-end run."""

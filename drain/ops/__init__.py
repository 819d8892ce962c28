"""Operator actions on queued and quarantined mail, each one state move and one token top-up."""

"""Intake: the producer API, the SMTP ingress and the rules applied at the door."""

"""Operator actions, each doing its state move, its audit record and its work-token top-up once:
control (rates, pauses, breakers), quarantine (release, delete, export), rules (add with its sweep),
actions (flush, bounce, delete, hold, release by selectors, in select), pauses (notes), audit."""

"""Flow control: may this message go now (rates, the domain gate, breakers, pauses)."""

"""The Laneway kopf operator and the policy compiler it shares with `laneway compile`."""

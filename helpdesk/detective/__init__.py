"""The Issue Detective: a customer's agents' signals gathered, candidate root causes ranked with a confidence, evidence and a fix, similar past issues, saved diagnoses and verdicts."""

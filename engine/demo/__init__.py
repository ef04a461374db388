"""Demo-cluster helpers: the synthetic self-play generator and its ledger (no ringsync imports)."""

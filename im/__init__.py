"""The messaging domain: storage, inbox seqs, auth, fan-out and the use cases. No HTTP here."""

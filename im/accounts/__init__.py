"""Accounts: users, passwords and access tokens."""

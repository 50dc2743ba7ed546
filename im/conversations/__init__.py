"""Conversations: who may talk to whom (friends, groups), receipts, files, history and encryption at rest."""

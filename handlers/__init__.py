"""Thin Tornado handlers: parse and validate, call one service method, encode the result."""

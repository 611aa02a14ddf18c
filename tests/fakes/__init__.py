"""Fake upstreams speaking provider wire formats on real sockets, scriptable per test."""

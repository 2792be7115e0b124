"""Tools for measuring and training ear (`ear eval`, `ear train`): never imported by the
service, which they use only through its public stages."""

"""The HTTP face: the /api blueprint, webhook deliveries, authentication and the server."""

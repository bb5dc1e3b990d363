"""The runtime without Flask: registry, engine, scheduler, definitions, templating, settings."""

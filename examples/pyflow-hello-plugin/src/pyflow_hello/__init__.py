"""An example PyFlow plugin: the ``hello`` step."""

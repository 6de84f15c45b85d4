"""Node types. Importing this package registers every type in :data:`helpline.ivr.model.NODE_TYPES`."""

from helpline.ivr.nodes import http, input, logic, prompting, recording, routing, subflow

__all__ = ["http", "input", "logic", "prompting", "recording", "routing", "subflow"]

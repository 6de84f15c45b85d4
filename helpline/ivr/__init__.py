"""IVR flows: YAML flow language, validator, interpreter, simulator and hot-reloading registry."""

from helpline.ivr.channel import Channel, EnqueueSpec, HttpPort, HttpResponse
from helpline.ivr.interpreter import FlowResult, run_flow
from helpline.ivr.model import Flow
from helpline.ivr.problems import Problem
from helpline.ivr.registry import FlowRegistry
from helpline.ivr.snapshot import FlowInvalid, load_flow
from helpline.ivr.validate import validate_paths

__all__ = [
    "Channel", "EnqueueSpec", "Flow", "FlowInvalid", "FlowRegistry", "FlowResult", "HttpPort",
    "HttpResponse", "Problem", "load_flow", "run_flow", "validate_paths",
]

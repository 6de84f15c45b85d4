"""Live calls: one task per call from answer to hang-up, joining SIP, RTP and the IVR."""

from helpline.calls.manager import ActiveCall, CallManager, CallPolicy

__all__ = ["ActiveCall", "CallManager", "CallPolicy"]

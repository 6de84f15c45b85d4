"""Test-side peers and probes: a pjsua2 caller, an RTP probe, a minimal SIP UAC."""

"""Consented, tamper-evident call recording (issue 4 on the roadmap).

The media engine already exposes what recording needs: ``RtpSession.on_audio`` delivers the caller's
decoded audio, and outgoing frames pass through the engine's single tick.
"""

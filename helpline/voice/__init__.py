"""Media: SDP offer/answer, RTP sessions on one paced clock, bridging, G.711, RFC 4733 DTMF, prompts."""

from helpline.voice.bridge import BridgeStats, MediaBridge
from helpline.voice.dtmf import DtmfReceiver, dtmf_payloads
from helpline.voice.engine import EngineStats, MediaEngine, MediaPortsExhausted
from helpline.voice.g711 import PCMA, PCMU, G711Codec, codec_by_name
from helpline.voice.prompt_spec import PromptSpec
from helpline.voice.prompts import PromptAudio, PromptCache, PromptError
from helpline.voice.rtp import RtpPacket, RtpSession, RtpStats, build_rtp_packet, parse_rtp_packet
from helpline.voice.sdp import Negotiated, NoCommonCodec, SdpError, SdpSession, negotiate
from helpline.voice.tones import detect_tones, dominant_tone, synthesize_tone, tone_power

__all__ = [
    "PCMA",
    "PCMU",
    "BridgeStats",
    "DtmfReceiver",
    "EngineStats",
    "G711Codec",
    "MediaBridge",
    "MediaEngine",
    "MediaPortsExhausted",
    "Negotiated",
    "NoCommonCodec",
    "PromptAudio",
    "PromptCache",
    "PromptError",
    "PromptSpec",
    "RtpPacket",
    "RtpSession",
    "RtpStats",
    "SdpError",
    "SdpSession",
    "build_rtp_packet",
    "codec_by_name",
    "detect_tones",
    "dominant_tone",
    "dtmf_payloads",
    "negotiate",
    "parse_rtp_packet",
    "synthesize_tone",
    "tone_power",
]

"""HTTP API (Starlette): health, metrics, calls, security events, agents, queues, OpenAPI document."""

from helpline.web.app import HealthCheck, create_app
from helpline.web.metrics import register_media_metrics, register_pipeline_metrics
from helpline.web.queue_port import QueueView

__all__ = [
    "HealthCheck", "QueueView", "create_app", "register_media_metrics", "register_pipeline_metrics",
]

"""HTTP API (Starlette): health, metrics, calls, security events, OpenAPI document."""

from helpline.web.app import HealthCheck, create_app
from helpline.web.metrics import register_pipeline_metrics

__all__ = ["HealthCheck", "create_app", "register_pipeline_metrics"]

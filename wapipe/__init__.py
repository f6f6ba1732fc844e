"""wapipe: a streaming pipeline for 8x8 CPaaS WhatsApp webhooks (see README.md)."""

from prometheus_client import disable_created_metrics

# For every wapipe process: the `*_created` companion series double the metrics'
# exposition for no dashboard's use.
disable_created_metrics()  # type: ignore[no-untyped-call]

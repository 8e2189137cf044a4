"""The path the README documented for the built-in route; it lives in ``subscriptions.route``."""

from __future__ import annotations

from pacifica.dispatcher.subscriptions.route import (
    SubscriptionHandler,
    SubscriptionRoute,
    add_subscription_route,
)

__all__ = ["SubscriptionHandler", "SubscriptionRoute", "add_subscription_route"]

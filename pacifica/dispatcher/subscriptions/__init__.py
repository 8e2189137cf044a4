"""The subscription registry: users' JSONPaths and webhooks, and delivery to them.

``registry`` (validation, access rules, masking), ``matching`` (the match
index), ``route`` (the built-in route that records deliveries), ``delivery``
(policy check, signed POST, backoff: one attempt decided in one place) and
``notifications`` (the pacifica-notifications 0.5.2 commands). Their rows
are stored by ``storage.subscriptions`` and ``storage.deliveries``.
"""

from __future__ import annotations

from pacifica.dispatcher.subscriptions.route import (
    SubscriptionHandler,
    SubscriptionRoute,
    add_subscription_route,
)

__all__ = ["SubscriptionHandler", "SubscriptionRoute", "add_subscription_route"]

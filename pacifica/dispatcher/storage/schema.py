"""The tables: peewee models bound to one ``DatabaseProxy``, with UTC and JSON fields."""

from __future__ import annotations

import json
import uuid as uuidlib
from datetime import datetime, timezone
from typing import Any

import peewee

from pacifica.dispatcher.storage.values import DeliveryStatus, EventStatus, RunStatus, utcnow

database_proxy = peewee.DatabaseProxy()


class UTCDateTimeField(peewee.DateTimeField):
    """Stores naive UTC, returns aware UTC datetimes."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JSONTextField(peewee.TextField):
    """A JSON document stored as text (portable across SQLite, PostgreSQL, MySQL)."""

    def db_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    """Binds every model to the shared database proxy; ``updated`` changes on every save."""

    class Meta:
        database = database_proxy

    def save(self, *args: Any, **kwargs: Any) -> Any:
        if "updated" in self._meta.fields:
            self.updated = utcnow()
        return super().save(*args, **kwargs)


class SchemaInfo(BaseModel):
    """One row: the schema version this database is at."""

    version = peewee.IntegerField()

    class Meta:
        table_name = "dispatcher_schema"


class EventRecord(BaseModel):
    """A received event: its attributes, the document routes match, and its status."""

    uuid = peewee.UUIDField(primary_key=True, default=uuidlib.uuid4)
    event_id = peewee.CharField(max_length=255)
    source = peewee.CharField(max_length=1024)
    event_type = peewee.CharField(max_length=255, index=True)
    spec_version = peewee.CharField(max_length=16)
    event_time = UTCDateTimeField(null=True)
    content_type = peewee.CharField(max_length=255, null=True)
    document = JSONTextField()
    # No index of its own on status or updated (migration 10): (status, created) serves status.
    status = peewee.IntegerField(default=int(EventStatus.ACCEPTED))
    attempts = peewee.IntegerField(default=0)
    enqueued = UTCDateTimeField(null=True, index=True)
    started = UTCDateTimeField(null=True)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow)
    deleted = UTCDateTimeField(null=True)
    # The broker message that holds the event while it is '102 Processing'.
    claimed_by = peewee.CharField(max_length=255, null=True)
    # The worker (see ``WorkerBeat``) whose process runs it then: a dead worker's events return.
    holder = peewee.CharField(max_length=255, null=True, index=True)
    # The Pacifica transaction the event is about (``Transactions._id``), for the operator page.
    transaction_id = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "dispatcher_event"
        indexes = ((("source", "event_id"), True),)

    @property
    def event_status(self) -> EventStatus:
        """``status`` as an ``EventStatus``."""
        return EventStatus(self.status)


class RouteRun(BaseModel):
    """One route run for one event, with the handler's exception if it raised."""

    id = peewee.AutoField()
    # Its (event, route) index serves lookups by event (migration 10).
    event = peewee.ForeignKeyField(EventRecord, backref="runs", on_delete="CASCADE", index=False)
    route = peewee.CharField(max_length=255)
    handler = peewee.CharField(max_length=512)
    status = peewee.IntegerField(default=int(RunStatus.PROCESSING))
    exc_type = peewee.CharField(max_length=255, null=True)
    exc_message = peewee.TextField(null=True)
    exc_traceback = peewee.TextField(null=True)
    report = peewee.TextField(null=True)  # what a successful handler reported (migration 7)
    attempts = peewee.IntegerField(default=0)
    started = UTCDateTimeField(default=utcnow)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow)
    updated = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_route_run"
        indexes = ((("event", "route"), True),)


class Subscription(BaseModel):
    """A user's subscription: a JSONPath and the URL matching events are sent to."""

    uuid = peewee.UUIDField(primary_key=True, default=uuidlib.uuid4)
    name = peewee.CharField(max_length=255, index=True)
    jsonpath = peewee.TextField()
    user = peewee.CharField(max_length=255, index=True)
    target_url = peewee.TextField()
    version = peewee.CharField(max_length=16, default="v0.1")
    extensions = JSONTextField(default=dict)
    auth = JSONTextField(default=dict)
    secret = peewee.TextField(null=True)
    disabled = UTCDateTimeField(null=True, index=True)
    error = peewee.TextField(null=True)
    failures = peewee.IntegerField(default=0)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow, index=True)
    deleted = UTCDateTimeField(null=True, index=True)

    class Meta:
        table_name = "dispatcher_subscription"


class SubscriptionRevision(BaseModel):
    """One row whose counter is bumped with every subscription change (cache invalidation)."""

    id = peewee.IntegerField(primary_key=True)
    revision = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "dispatcher_subscription_revision"


class Delivery(BaseModel):
    """One matched (event, subscription) pair and where its delivery stands."""

    id = peewee.AutoField()
    uuid = peewee.UUIDField(default=uuidlib.uuid4, unique=True)
    event = peewee.ForeignKeyField(EventRecord, backref="deliveries", on_delete="CASCADE")
    subscription = peewee.ForeignKeyField(Subscription, backref="deliveries", on_delete="CASCADE")
    status = peewee.IntegerField(default=int(DeliveryStatus.PENDING), index=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt = UTCDateTimeField(null=True, index=True)
    lease_until = UTCDateTimeField(null=True)
    holder = peewee.CharField(max_length=255, null=True)  # the worker attempting it
    enqueued = UTCDateTimeField(null=True)
    policy_status = peewee.IntegerField(null=True)
    policy_body = peewee.TextField(null=True)
    target_status = peewee.IntegerField(null=True)
    target_body = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    budget_start = UTCDateTimeField(default=utcnow)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow)
    replay = peewee.IntegerField(
        default=0
    )  # the Replay it belongs to; 0: the original (migration 9)

    class Meta:
        table_name = "dispatcher_delivery"
        indexes = ((("event", "subscription", "replay"), True),)

    @property
    def delivery_status(self) -> DeliveryStatus:
        """``status`` as a ``DeliveryStatus``."""
        return DeliveryStatus(self.status)


class DeliveryAttempt(BaseModel):
    """One HTTP request made for a delivery: the policy check or the POST to the target."""

    id = peewee.AutoField()
    delivery = peewee.ForeignKeyField(Delivery, backref="attempt_log", on_delete="CASCADE")
    number = peewee.IntegerField()
    kind = peewee.CharField(max_length=16)
    status_code = peewee.IntegerField(null=True)
    response = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    duration = peewee.FloatField()
    created = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_delivery_attempt"


class WorkerBeat(BaseModel):
    """One row per running worker: the last time it said it was alive."""

    name = peewee.CharField(max_length=255, primary_key=True)
    heartbeat = UTCDateTimeField(default=utcnow, index=True)
    started = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_worker"


class HostSlot(BaseModel):
    """One of a target host's delivery slots: held by the delivery in flight there, until its lease ends."""

    host = peewee.CharField(max_length=300)
    slot = peewee.IntegerField()
    delivery = peewee.IntegerField(null=True)
    lease_until = UTCDateTimeField(null=True)

    class Meta:
        table_name = "dispatcher_host_slot"
        primary_key = peewee.CompositeKey("host", "slot")


class Replay(BaseModel):
    """Stored events sent again to one subscription (its deliveries carry its id), or one route
    run again on them (migration 9)."""

    id = peewee.AutoField()
    kind = peewee.CharField(max_length=16)  # "subscription" or "route"
    subscription = peewee.UUIDField(null=True)
    route = peewee.CharField(max_length=255, null=True)
    user = peewee.CharField(max_length=255)  # who asked ("cli" from the command line)
    jsonpath = peewee.TextField(null=True)
    since = UTCDateTimeField(null=True)
    until = UTCDateTimeField(null=True)
    rate = peewee.FloatField()  # per second
    total = peewee.IntegerField(default=0)
    created = UTCDateTimeField(default=utcnow)
    updated = UTCDateTimeField(default=utcnow)
    # Pacing (migration 11): the last time a publisher looked for what is due; how many seconds
    # the schedule was pushed back because no publisher looked (a crash: the rest keeps the
    # rate instead of going at once); when its last message was published (NULL until then).
    paced = UTCDateTimeField(null=True)
    lag = peewee.FloatField(default=0.0)
    released = UTCDateTimeField(null=True, index=True)

    class Meta:
        table_name = "dispatcher_replay"


class ReplayRun(BaseModel):
    """One event a route replay runs its route again on, and when (migration 11): the schedule
    of a route replay, as deliveries' ``next_attempt`` is for a subscription replay."""

    id = peewee.AutoField()
    replay = peewee.IntegerField()
    event = peewee.UUIDField()
    due = UTCDateTimeField()
    enqueued = UTCDateTimeField(null=True)  # when it was published (its event sent again)

    class Meta:
        table_name = "dispatcher_replay_run"
        # What is left to publish, in schedule order, without walking what was published.
        indexes = ((("replay", "enqueued", "due"), False), (("replay", "event"), True))


class Lineage(BaseModel):
    """One transaction a handler uploaded, and what it was made from (migration 9)."""

    id = peewee.AutoField()
    transaction = peewee.BigIntegerField(index=True)  # the new transaction's id
    source_transaction = peewee.BigIntegerField(null=True, index=True)
    event = peewee.UUIDField(null=True, index=True)  # the stored event the handler ran for
    route = peewee.CharField(max_length=255, null=True)
    handler = peewee.CharField(max_length=512, null=True)
    versions = JSONTextField(default=dict)  # package versions
    inputs = JSONTextField(default=list)  # input files: name, hashtype, hashsum
    created = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_lineage"


class ServerSecret(BaseModel):
    """Random keys every process of a deployment shares (e.g. the operator page's form tokens)."""

    name = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.CharField(max_length=128)

    class Meta:
        table_name = "dispatcher_secret"
